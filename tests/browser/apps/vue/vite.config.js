import { defineConfig } from 'vite';
import vue from '@vitejs/plugin-vue';

// Relative asset URLs: the test's Django server serves the build under /__test__/apps/vue/.
export default defineConfig({ base: './', plugins: [vue()], build: { sourcemap: false } });
