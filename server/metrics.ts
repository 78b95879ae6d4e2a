/**
 * GET /metrics in Prometheus' text format, the same in one process and in a
 * cluster: prom-client formats them and adds its default process metrics;
 * the values are read at scrape time from the stats c1m keeps anyway.
 */
import { collectDefaultMetrics, Registry, type MetricValueWithName } from 'prom-client';
import { LATENCY_BUCKETS_MS, type LatencyBuckets } from '../router/latency.js';
import { TRANSPORTS, type TransportStats } from './stream.js';

export interface EdgeGauges {
  id: string;
  state: string;
  streams: number;
  capacity: number;
  chunks: number;
  bytes: number;
  slowConsumerCloses: number;
}

export interface MetricsSnapshot {
  streams: number;
  users: number;
  sends: number;
  kinds: Record<string, { sends: number; deliveries: number }>;
  chunks: number;
  bytes: number;
  slowConsumerCloses: number;
  latency: LatencyBuckets;
  /** Per transport, summed over the edges in a cluster. */
  transports: TransportStats;
  /** Per edge, in a cluster; empty in one process. */
  edges: EdgeGauges[];
  /** Resumed streams, where the process keeps a history. */
  history?: { resumes: number; replayed: number; lost: number } | null;
  /** Bus messages a router dropped as malformed, in a cluster. */
  busMalformed?: number;
}

type Values = MetricValueWithName<string>[];

/** A metric computed at scrape time; prom-client's registry takes any object with name, help, type and get(). */
function computed(name: string, help: string, type: 'gauge' | 'counter' | 'histogram', values: () => Values) {
  return { name, help, type, get: async () => ({ name, help, type, aggregator: 'sum', values: values() }) };
}

export function metricsRegistry(read: () => MetricsSnapshot): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'c1m_' });
  let snapshot: MetricsSnapshot | undefined;
  // Read once per scrape, by the first metric formatted (prom-client formats them in registration order).
  const one = (pick: (s: MetricsSnapshot) => number) => (): Values => {
    return [{ value: pick(snapshot!), labels: {} }];
  };
  const perEdge = (pick: (e: EdgeGauges) => number) => (): Values =>
    snapshot!.edges.map((e) => ({ value: pick(e), labels: { edge: e.id, state: e.state } }));
  const perTransport = (pick: (t: TransportStats[keyof TransportStats]) => number) => (): Values =>
    TRANSPORTS.map((transport) => ({ value: pick(snapshot!.transports[transport]), labels: { transport } }));
  const metrics = [
    computed('c1m_streams', 'Open comet streams.', 'gauge', () => {
      snapshot = read();
      return [{ value: snapshot.streams, labels: {} }];
    }),
    computed('c1m_users', 'Distinct connected users.', 'gauge', one((s) => s.users)),
    computed('c1m_sends_total', 'Messages sent (send calls).', 'counter', one((s) => s.sends)),
    computed('c1m_kind_sends_total', 'Messages sent, by kind of subject (user, or a topic kind; at most 32 kinds, then other).', 'counter', () =>
      Object.entries(snapshot!.kinds).map(([kind, counts]) => ({ value: counts.sends, labels: { kind } })),
    ),
    computed('c1m_kind_deliveries_total', 'Streams that took a message, by kind of the subject it was sent to.', 'counter', () =>
      Object.entries(snapshot!.kinds).map(([kind, counts]) => ({ value: counts.deliveries, labels: { kind } })),
    ),
    computed('c1m_chunks_total', 'Chunks written to streams.', 'counter', one((s) => s.chunks)),
    computed('c1m_bytes_total', 'Message bytes written to streams.', 'counter', one((s) => s.bytes)),
    computed('c1m_slow_consumer_closes_total', 'Streams closed because their client stopped reading.', 'counter', one((s) => s.slowConsumerCloses)),
    computed('c1m_send_to_write_seconds', 'From the start of a send to the write of the message on a stream.', 'histogram', () => {
      const { counts, sum } = snapshot!.latency;
      let cumulative = 0;
      const buckets: Values = LATENCY_BUCKETS_MS.map((le, i) => {
        cumulative += counts[i];
        return { value: cumulative, labels: { le: le / 1000 }, metricName: 'c1m_send_to_write_seconds_bucket' };
      });
      cumulative += counts[LATENCY_BUCKETS_MS.length];
      buckets.push({ value: cumulative, labels: { le: '+Inf' }, metricName: 'c1m_send_to_write_seconds_bucket' });
      buckets.push({ value: sum / 1000, labels: {}, metricName: 'c1m_send_to_write_seconds_sum' });
      buckets.push({ value: cumulative, labels: {}, metricName: 'c1m_send_to_write_seconds_count' });
      return buckets;
    }),
    computed('c1m_transport_streams', 'Open streams of each transport (chunked, sse, ws).', 'gauge', perTransport((t) => t.open)),
    computed('c1m_transport_chunks_total', 'Chunks (messages, heartbeats) written to streams of each transport.', 'counter', perTransport((t) => t.chunks)),
    computed('c1m_transport_bytes_total', 'Bytes written to streams of each transport, as framed for it.', 'counter', perTransport((t) => t.bytes)),
    computed('c1m_transport_slow_consumer_closes_total', 'Slow-consumer closes on each transport.', 'counter', perTransport((t) => t.slowConsumerCloses)),
    computed('c1m_transport_auth_failures_total', 'Streams of each transport refused for a missing, wrong or expired token.', 'counter', perTransport((t) => t.authFailures)),
    computed('c1m_resumes_total', 'Streams that asked to resume from a message id.', 'counter', one((s) => s.history?.resumes ?? 0)),
    computed('c1m_replayed_total', 'Messages replayed to resumed streams.', 'counter', one((s) => s.history?.replayed ?? 0)),
    computed('c1m_history_lost_total', 'Resumed streams told their history is lost (too old, or an id this store never gave).', 'counter', one((s) => s.history?.lost ?? 0)),
    computed('c1m_bus_malformed_total', 'Bus messages a router dropped as not c1m messages or not for the subject they came on (cluster only).', 'counter', one((s) => s.busMalformed ?? 0)),
    computed('c1m_edge_streams', 'Streams held by each edge.', 'gauge', perEdge((e) => e.streams)),
    computed('c1m_edge_capacity', 'Streams each edge may hold.', 'gauge', perEdge((e) => e.capacity)),
    computed('c1m_edge_chunks_total', 'Chunks written by each edge.', 'counter', perEdge((e) => e.chunks)),
    computed('c1m_edge_bytes_total', 'Message bytes written by each edge.', 'counter', perEdge((e) => e.bytes)),
    computed('c1m_edge_slow_consumer_closes_total', 'Slow-consumer closes on each edge.', 'counter', perEdge((e) => e.slowConsumerCloses)),
  ];
  for (const metric of metrics) registry.registerMetric(metric as never);
  return registry;
}
