/**
 * Worker thread of a router's automatic snapshots (store-snapshot-auto.ts): copies its view (copyView, synchronous
 * and seconds long on a large view) off the router's event loop, and hands the copy back, its bytes moved rather
 * than copied.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { copyView } from './store-snapshot-write.js';

const copy = copyView(workerData as string);
parentPort!.postMessage(copy, [copy.bytes.buffer as ArrayBuffer]);
