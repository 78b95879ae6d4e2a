import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Servers in tests hold real sockets; run files one at a time so fd limits and ports stay predictable.
    fileParallelism: false,
  },
});
