// Reductions over a middle axis: x viewed as [outer, rows, inner], out[o][c] reduces x[o][r][c] over
// r in order (each column sequentially, as a transpose then a row reduction would), four columns at
// a time. Used when the reduced axes are not the innermost ones (e.g. a sum over the batch axis).

export function sumColumnsF32(x: usize, out: usize, outer: i32, rows: i32, inner: i32): void {
  const row = (<usize>inner) << 2;
  const row4 = row & ~15;
  for (let o = 0; o < outer; o++) {
    const xb = x + <usize>o * <usize>rows * row;
    const ob = out + <usize>o * row;
    memory.fill(ob, 0, row);
    for (let r = 0; r < rows; r++) {
      const src = xb + <usize>r * row;
      let j: usize = 0;
      for (; j < row4; j += 16) v128.store(ob + j, f32x4.add(v128.load(ob + j), v128.load(src + j)));
      for (; j < row; j += 4) store<f32>(ob + j, load<f32>(ob + j) + load<f32>(src + j));
    }
  }
}

export function sumColumnsI32(x: usize, out: usize, outer: i32, rows: i32, inner: i32): void {
  const row = (<usize>inner) << 2;
  const row4 = row & ~15;
  for (let o = 0; o < outer; o++) {
    const xb = x + <usize>o * <usize>rows * row;
    const ob = out + <usize>o * row;
    memory.fill(ob, 0, row);
    for (let r = 0; r < rows; r++) {
      const src = xb + <usize>r * row;
      let j: usize = 0;
      for (; j < row4; j += 16) v128.store(ob + j, i32x4.add(v128.load(ob + j), v128.load(src + j)));
      for (; j < row; j += 4) store<i32>(ob + j, load<i32>(ob + j) + load<i32>(src + j));
    }
  }
}
