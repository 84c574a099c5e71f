import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// Relative asset URLs: the test's Django server serves the build under /__test__/apps/react/.
export default defineConfig({ base: './', plugins: [react()], build: { sourcemap: false } });
