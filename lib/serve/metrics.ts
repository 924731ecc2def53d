// The service's metrics: prom-client's default process metrics and sppnet's own (requests by route
// and code, refusals by reason, queue, batches, memory), in a registry of one server's own.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { memory } from '../core/memory';
import { BatchEvent, BatchingRunner } from './batching';

export interface MetricsSources {
  runner: BatchingRunner;
  /** Requests refused by the service itself, by reason (counted by the server as it refuses). */
  refused: Record<'queue_full' | 'queued_pixels' | 'memory' | 'event_loop' | 'too_large' | 'timeout' | 'aborted', number>;
  maxInFlight: number;
  maxQueuedPixels: number;
  inFlight(): number;
  queuedPixels(): number;
}

/** The registry, the per-response counters the server's onResponse hook feeds, and detach() (at close). */
export function serverMetrics(o: MetricsSources) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const requests = new Counter({ name: 'sppnet_requests_total', help: 'Responses sent, by route pattern and status code (fastify\'s own errors included).', labelNames: ['route', 'code'], registers });
  const durations = new Histogram({ name: 'sppnet_request_duration_seconds', help: 'Time from arrival to the response sent, by route pattern.', labelNames: ['route'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers });
  new Counter({
    name: 'sppnet_rejected_total', help: 'Requests refused: queue_full, queued_pixels, memory and event_loop by the service (503), too_large (413), timeout and aborted by the batching runner and the detections.', labelNames: ['reason'], registers,
    collect() {
      const r = o.runner.stats().rejected;
      this.reset();
      // The runner's own queue_full (a request that cannot finish in time) adds to the service's.
      for (const [reason, v] of Object.entries({ ...o.refused, queue_full: o.refused.queue_full + r.queueFull, timeout: o.refused.timeout + r.timeout, aborted: o.refused.aborted + r.aborted })) this.inc({ reason }, v);
    },
  });
  new Gauge({ name: 'sppnet_queue_depth', help: 'Requests waiting for a batch.', registers, collect() { this.set(o.runner.stats().queued); } });
  new Gauge({ name: 'sppnet_in_flight_requests', help: `Requests admitted and not yet answered (limit maxQueueLength ${o.maxInFlight}).`, registers, collect() { this.set(o.inFlight()); } });
  new Gauge({ name: 'sppnet_queued_pixels', help: `Pixels of the admitted images, as the model sees them (limit maxQueuedPixels ${o.maxQueuedPixels}).`, registers, collect() { this.set(o.queuedPixels()); } });
  const batches = new Counter({ name: 'sppnet_batches_total', help: 'Model calls.', registers });
  const batchSize = new Histogram({ name: 'sppnet_batch_size', help: 'Images per model call.', buckets: [1, 2, 4, 8, 16, 32, 64, 128], registers });
  const batchPixels = new Histogram({ name: 'sppnet_batch_pixels', help: `Pixels per model call (limit maxBatchPixels ${o.runner.maxBatchPixels}).`, buckets: [1e4, 1e5, 2.5e5, 5e5, 1e6, 2e6, 4e6, 8e6, 16e6], registers });
  const batchSeconds = new Histogram({ name: 'sppnet_batch_duration_seconds', help: 'Time of one model call, packing included.', buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers });
  const onBatch = (e: BatchEvent) => {
    batches.inc();
    batchSize.observe(e.images);
    batchPixels.observe(e.pixels);
    batchSeconds.observe(e.seconds);
  };
  o.runner.on('batch', onBatch);
  new Gauge({ name: 'sppnet_device_memory_bytes', help: 'Device memory held by sppnet.', registers, collect() { this.set(memory().deviceBytes); } });
  new Gauge({
    name: 'sppnet_live_tensor_bytes', help: 'Bytes of live tensors by device.', labelNames: ['device'], registers,
    collect() {
      const m = memory();
      this.set({ device: 'cpu' }, m.bytes.cpu);
      this.set({ device: 'cuda' }, m.bytes.cuda);
    },
  });
  new Gauge({ name: 'sppnet_activation_bytes', help: 'Bytes of activation buffers the models keep between runs.', registers, collect() { this.set(memory().activationBytes); } });
  return { registry, requests, durations, detach: () => o.runner.off('batch', onBatch) };
}
