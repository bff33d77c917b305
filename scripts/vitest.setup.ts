// Runs before every test file: initialise the backend named by SWITCHYARD_BACKEND (default wasm).
import { initBackend } from '@switchyard/tensor';

await initBackend({ backend: (process.env.SWITCHYARD_BACKEND as 'wasm' | 'cpu' | undefined) ?? 'wasm' });
