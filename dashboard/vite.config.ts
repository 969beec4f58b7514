/// <reference types="vitest/config" />
// The build goes into the Python package, which serves it at `/` and ships it in the wheel.
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

const server = process.env.GATHERING_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "../src/gathering/api/dashboard_build",
    emptyOutDir: true,
    reportCompressedSize: true,
    // The first load is held to 250 KB gzipped by tests/test_dashboard_build.py; the pages' own
    // chunks (Monaco and its language workers above all) load when they are opened.
    chunkSizeWarningLimit: 8000,
  },
  server: {
    // `npm run dev` talks to a running `gathering serve` (GATHERING_URL, default :8000).
    proxy: {
      "^/(?!src/|@|node_modules/|assets/).+": { target: server, changeOrigin: true, ws: true },
    },
  },
  test: { environment: "jsdom" },
});
