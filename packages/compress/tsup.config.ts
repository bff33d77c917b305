import { defineLibraryConfig } from '../../tsup.shared.ts';

export default defineLibraryConfig();
