// Reductions over a middle axis: x viewed as [outer, rows, inner], out[o][c] reduces x[o][r][c] over
// r in order (each column sequentially, as a transpose then a row reduction would), four columns at
// a time. Used when the reduced axes are not the innermost ones (e.g. a sum over the batch axis).

import { addRow } from './copy';

export function sumColumnsF32(x: usize, out: usize, outer: i32, rows: i32, inner: i32): void {
  sumColumns<f32>(x, out, outer, rows, inner);
}

export function sumColumnsI32(x: usize, out: usize, outer: i32, rows: i32, inner: i32): void {
  sumColumns<i32>(x, out, outer, rows, inner);
}

function sumColumns<T>(x: usize, out: usize, outer: i32, rows: i32, inner: i32): void {
  const row = (<usize>inner) << 2;
  for (let o = 0; o < outer; o++) {
    const xb = x + <usize>o * <usize>rows * row;
    const ob = out + <usize>o * row;
    memory.fill(ob, 0, row);
    for (let r = 0; r < rows; r++) addRow<T>(ob, xb + <usize>r * row, row);
  }
}
