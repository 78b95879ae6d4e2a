/*
 * c1m flood worker: holds many long-lived streams (chunked GET /test/<id>,
 * EventSource GET /sse/<id> or WebSocket /ws/<id>) from one process, for `c1m loadgen flood` (loadgen/flood.ts), which starts one worker
 * per open-file limit's worth of connections and aggregates what they print.
 *
 * Written in C because it shares a 2-core box with the server it measures:
 * Node's net sockets cost kilobytes of RSS and far more CPU per connect; this
 * keeps a few dozen bytes of state per connection.
 *
 *   flood-worker HOST PORT RATE INFLIGHT INTERVAL_MS DEADLINE_S READ_EVERY_MS TRANSPORT RECONNECT TOPICS SLICE...
 *   SLICE = SOURCE_IP:FIRST_ID:COUNT:FIRST_PORT[:SPARE_FIRST-SPARE_LAST]
 *
 * Ids FIRST_ID.. connect in order from SOURCE_IP, each on the next free port
 * from FIRST_PORT up. A port something else on this host holds (the server
 * under test may listen inside the range) is skipped, which pushes the last
 * ids past FIRST_PORT+COUNT-1, onto another slice's ports: they go on in the
 * spare ports instead. Only when those run out too is it a bind error.
 *
 * RATE connects/s (0: as fast as INFLIGHT allows), INFLIGHT connects not yet
 * welcomed at most. Every socket is bound to its source address and its own
 * explicit port, and has SO_LINGER 0, so every close is an RST: no TIME_WAIT.
 * Stops on EOF on stdin (the parent ended or died), SIGTERM/SIGINT, or
 * DEADLINE_S seconds after start, whichever comes first.
 *
 * TRANSPORT: chunked, sse or ws. SSE events are HTTP chunks whose lines start
 * with "data: "; WebSocket frames (after a handshake with a fixed key) carry a
 * header line, then the message; pings are answered with empty pongs. Either
 * way the first chunk or frame is the welcome and each later one counts as a
 * chunk, timed from the t= stamp at the start of a message line.
 *
 * TOPICS > 0: stream <id> also listens to the topic room:<1 + id % TOPICS>
 * (?topics=, as floodTopic in loadgen/flood.ts says); 0: to none.
 *
 * RECONNECT 1: a stream that ends (or a connect that fails) is opened again,
 * on the same source address and port (its close was an RST, so the port is
 * free), after a wait drawn from 0 to 500 ms x 2^attempt (at most 20 s): the
 * browser client's full-jitter backoff. A welcome resets the attempts.
 *
 * READ_EVERY_MS > 0: once every stream is open (or failed), read what arrived
 * every READ_EVERY_MS instead of sleeping in epoll_wait. A reader blocked in
 * epoll_wait is woken by each chunk, and on a shared box the server pays for
 * that wake-up inside its send() and the worker for a context switch; a
 * client on its own machine costs the server nothing of the kind. Delivery
 * times do not change (they are the kernel's receive timestamps); the read
 * lag grows by up to READ_EVERY_MS. Chunks that queue on one socket between
 * two reads are all timed at the last one's arrival, so reading less often can
 * make latency look worse, never better (at a million streams a stream gets a
 * chunk every few seconds). 0: wake on every arrival.
 *
 * Every INTERVAL_MS it prints, on stdout, histogram lines with the latency
 * samples recorded since the previous report ("H w|d|l bucket:count ..."; w:
 * connect to welcome, d: message delivery, l: this worker's own read lag, all
 * in microseconds, buckets as in bucketOf below), then one "S key=value ..."
 * line of running totals. At the end the same, then "E".
 *
 * A delivery is timed from the message's t= stamp to the kernel's receive
 * timestamp of the packet that carried it (SO_TIMESTAMP; the last packet of
 * the read), as a client on a machine of its own would see it. When this
 * worker then reads it is its own business, shared cores and all: that lag is
 * the l histogram.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Connection states; IDLE: no socket (not started yet, or finished); WAITING: none until its reconnect is due. */
enum { IDLE, WAITING, CONNECTING, STATUS, HEADERS, SIZE, SIZE_EXT, DATA, DATA_END, WS_HEAD, WS_LEN, WS_EXT, WS_DATA };
/* Scanning chunk data for "t=<epoch ms>[.<fraction>]" at the start of each line (after "data: " on SSE). */
enum { TS_START, TS_PREFIX, TS_T, TS_EQ, TS_INT, TS_FRAC, TS_SKIP };
enum { CHUNKED, SSE, WS };
static const char SSE_PREFIX[] = "data: ";

/* Kept tiny: a worker holds ~20,000 of these. */
struct conn {
  uint64_t started_us; /* monotonic time of connect(), for welcome latency and the connect timeout */
  uint64_t ts;         /* digits of t= read so far */
  int32_t fd;
  uint32_t n;          /* status code, chunk size, then bytes left in the chunk (or frame payload) */
  uint32_t due_ms;     /* WAITING: when to connect again, ms after start */
  uint16_t port;       /* its local port, kept for reconnects */
  uint8_t state, ts_state, ts_frac, line_chars, welcomed;
  uint8_t skip;        /* "data: " characters matched; WebSocket extended-length bytes left */
  uint8_t op;          /* WebSocket opcode of the frame being read */
  uint8_t attempt;     /* reconnect attempts since the last welcome */
};

struct slice {
  struct sockaddr_in src;
  uint32_t first_id, count, offset; /* offset: index of its first connection */
  uint32_t port, end, spare_first, spare_last; /* port: the next to try, up to end; then the spare ports */
};

enum { E_SOCKET, E_BIND, E_REFUSED, E_ADDR, E_CONNECT, E_TIMEOUT, E_WRITE, E_HTTP404, E_HTTP503, E_HTTP, E_PARSE, E_ENDED, E_EOF, E_RESET, E_READ, E_KINDS };
static const char *const kind_names[E_KINDS] = {"socket", "bind", "refused", "addr", "connect", "timeout", "write", "http404", "http503", "http", "parse", "ended", "eof", "reset", "read"};

/* How often waiting reconnects are checked: a pass over every connection, so not every loop. */
#define RETRY_SWEEP_US 20000u

/* Log-linear buckets: exact below 128 us, then 64 per power of two (under 1.6% error). */
#define LINEAR 128
#define SUB 64
#define BUCKETS (LINEAR + 48 * SUB)
static uint32_t hist_welcome[BUCKETS], hist_delivery[BUCKETS], hist_lag[BUCKETS];
static uint64_t max_welcome, max_delivery, max_lag;
/* Realtime of the read being parsed: when the kernel received its data, and when it was read. */
static uint64_t arrived_us, read_us;

static struct conn *conns;
static struct slice *slices;
static uint32_t nslices, total;
static struct sockaddr_in dest;
static const char *host;
static volatile sig_atomic_t stop;

static int read_every_ms, transport, reconnect;
static uint32_t topics;
static uint64_t t0_us;
static uint64_t waiting, reconnects;
static uint64_t attempted, connected, open_now, welcomed, closed, failed, inflight, chunks, chunk_bytes, heartbeats, bytes, messages;
static uint64_t errors[E_KINDS];
static uint64_t ramp_us, ramp_cpu_us, held; /* held: streams open when told to stop */

static uint64_t clock_us(clockid_t id) {
  struct timespec t;
  clock_gettime(id, &t);
  return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

static uint32_t bucketOf(uint64_t v) {
  if (v < LINEAR) return (uint32_t)v;
  int shift = 63 - __builtin_clzll(v) - 6; /* v >> shift is in [64, 127] */
  uint32_t b = LINEAR + (uint32_t)(shift - 1) * SUB + (uint32_t)((v >> shift) - SUB);
  return b < BUCKETS ? b : BUCKETS - 1;
}

static void record(uint32_t *hist, uint64_t *max, uint64_t v) {
  hist[bucketOf(v)]++;
  if (v > *max) *max = v;
}

static uint64_t cpu_us(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (uint64_t)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000u + (uint64_t)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

static uint64_t rss_kb(void) {
  unsigned long size = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%lu %lu", &size, &resident) != 2) resident = 0;
    fclose(f);
  }
  return resident * (uint64_t)sysconf(_SC_PAGESIZE) / 1024u;
}

static void emit_hist(char name, uint32_t *hist) {
  int any = 0;
  for (uint32_t b = 0; b < BUCKETS; b++) {
    if (!hist[b]) continue;
    if (!any) printf("H %c", name);
    any = 1;
    printf(" %u:%u", b, hist[b]);
    hist[b] = 0;
  }
  if (any) putchar('\n');
}

static void report(void) {
  emit_hist('w', hist_welcome);
  emit_hist('d', hist_delivery);
  emit_hist('l', hist_lag);
  printf("S attempted=%lu connected=%lu open=%lu welcomed=%lu closed=%lu failed=%lu inflight=%lu chunks=%lu chunk_bytes=%lu heartbeats=%lu bytes=%lu messages=%lu"
         " welcome_max_us=%lu delivery_max_us=%lu read_lag_max_us=%lu ramp_us=%lu ramp_cpu_us=%lu cpu_us=%lu rss_kb=%lu held=%lu reconnects=%lu",
         attempted, connected, open_now, welcomed, closed, failed, inflight, chunks, chunk_bytes, heartbeats, bytes, messages, max_welcome, max_delivery, max_lag,
         ramp_us, ramp_cpu_us, cpu_us(), rss_kb(), held, reconnects);
  for (int k = 0; k < E_KINDS; k++)
    if (errors[k]) printf(" err_%s=%lu", kind_names[k], errors[k]);
  putchar('\n');
  fflush(stdout);
}

/* Ends a connection that we did not choose to stop: before its welcome it failed, after it it closed. */
static void drop(struct conn *c, int kind) {
  if (c->state >= STATUS) open_now--;
  if (c->welcomed) {
    closed++;
  } else {
    failed++;
    inflight--;
  }
  errors[kind]++;
  if (c->fd >= 0) close(c->fd); /* SO_LINGER 0: RST */
  c->fd = -1;
  c->state = IDLE;
  if (reconnect && !stop) {
    uint32_t bound = c->attempt >= 6 ? 20000u : 500u << c->attempt; /* 500 x 2^6 is past the 20 s ceiling */
    if (bound > 20000u) bound = 20000u;
    if (c->attempt < 255) c->attempt++;
    c->due_ms = (uint32_t)((clock_us(CLOCK_MONOTONIC) - t0_us) / 1000u) + (uint32_t)(random() % (bound + 1));
    c->state = WAITING;
    waiting++;
  }
}

static int connect_kind(int err) {
  if (err == ECONNREFUSED) return E_REFUSED;
  if (err == ETIMEDOUT) return E_TIMEOUT;
  if (err == EADDRNOTAVAIL || err == EADDRINUSE) return E_ADDR;
  return E_CONNECT;
}

static void start(uint32_t index, struct slice *s, int ep) {
  struct conn *c = &conns[index];
  c->started_us = clock_us(CLOCK_MONOTONIC);
  attempted++;
  inflight++;
  c->welcomed = 0;
  c->state = IDLE;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    failed++, inflight--, errors[E_SOCKET]++;
    return;
  }
  c->state = CONNECTING;
  struct linger rst = {1, 0};
  setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
  int on = 1;
  setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMP, &on, sizeof on);
  struct sockaddr_in src = s->src;
  if (c->port) { /* a reconnect: the port it had */
    src.sin_port = htons(c->port);
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) != 0) return drop(c, E_BIND);
  } else for (;;) {
    if (s->port > s->end) { /* on to the spare ports, once */
      if (s->spare_first > s->spare_last) return drop(c, E_BIND);
      s->port = s->spare_first, s->end = s->spare_last;
      s->spare_first = 1, s->spare_last = 0;
      continue;
    }
    c->port = (uint16_t)s->port++;
    src.sin_port = htons(c->port);
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) == 0) break;
    c->port = 0;
    if (errno != EADDRINUSE) return drop(c, E_BIND);
  }
  if (connect(c->fd, (struct sockaddr *)&dest, sizeof dest) < 0 && errno != EINPROGRESS) return drop(c, connect_kind(errno));
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u32 = index};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) drop(c, E_SOCKET);
}

static void connected_now(uint32_t index) {
  struct conn *c = &conns[index];
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) return drop(c, connect_kind(err ? err : errno));
  struct slice *s = slices;
  while (index >= s->offset + s->count) s++;
  char req[352], query[32] = "";
  uint32_t id = s->first_id + (index - s->offset);
  if (topics > 0) snprintf(query, sizeof query, "?topics=room:%u", 1 + id % topics);
  int n = transport == WS ? snprintf(req, sizeof req,
                                     "GET /ws/%u%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", id, query, host)
                             : snprintf(req, sizeof req, "GET /%s/%u%s HTTP/1.1\r\nHost: %s\r\n\r\n", transport == SSE ? "sse" : "test", id, query, host);
  c->state = STATUS;
  c->n = 0;
  c->line_chars = 0;
  connected++;
  open_now++;
  if (send(c->fd, req, (size_t)n, MSG_NOSIGNAL) != n) drop(c, E_WRITE);
}

static void message_seen(struct conn *c) {
  if (c->ts == 0) return;
  uint64_t sent_us = c->ts;
  for (int f = c->ts_frac; f < 3; f++) sent_us *= 10;
  messages++;
  record(hist_delivery, &max_delivery, arrived_us > sent_us ? arrived_us - sent_us : 0);
  record(hist_lag, &max_lag, read_us - arrived_us);
}

/* Finds t=<send time> at the start of every line of chunk data; everything else is skipped with memchr. */
static void scan_data(struct conn *c, const char *p, size_t len) {
  size_t i = 0;
  while (i < len) {
    char ch = p[i];
    switch (c->ts_state) {
      case TS_START:
        if (transport == SSE && ch == 'd') {
          c->ts_state = TS_PREFIX;
          c->skip = 1;
          i++;
          break;
        }
        /* fall through */
      case TS_T:
        c->ts_state = ch == 't' ? TS_EQ : TS_SKIP;
        if (ch != '\n') i++;
        break;
      case TS_PREFIX:
        if (ch != SSE_PREFIX[c->skip]) {
          c->ts_state = TS_SKIP;
          break;
        }
        i++;
        if (++c->skip == sizeof SSE_PREFIX - 1) c->ts_state = TS_T;
        break;
      case TS_EQ:
        c->ts_state = ch == '=' ? TS_INT : TS_SKIP;
        c->ts = 0;
        c->ts_frac = 0;
        if (ch != '\n') i++;
        break;
      case TS_INT:
      case TS_FRAC:
        if (ch >= '0' && ch <= '9') {
          if (c->ts_state == TS_INT || c->ts_frac < 3) {
            c->ts = c->ts * 10 + (uint64_t)(ch - '0');
            c->ts_frac += c->ts_state == TS_FRAC;
          }
          i++;
        } else if (ch == '.' && c->ts_state == TS_INT) {
          c->ts_state = TS_FRAC;
          i++;
        } else {
          message_seen(c);
          c->ts_state = TS_SKIP; /* the newline, if this is one, is consumed there */
        }
        break;
      default: {
        const char *nl = memchr(p + i, '\n', len - i);
        if (!nl) return;
        i = (size_t)(nl - p) + 1;
        c->ts_state = TS_START;
      }
    }
  }
}

/* A chunk or frame begins: the first is the welcome. */
static void message_started(struct conn *c) {
  if (!c->welcomed) {
    c->welcomed = 1;
    c->attempt = 0;
    welcomed++;
    inflight--;
    record(hist_welcome, &max_welcome, clock_us(CLOCK_MONOTONIC) - c->started_us);
  } else if ((transport == CHUNKED && c->n == 1) || (transport == SSE && c->n == 2)) {
    heartbeats++; /* "\n" (":\n" on SSE): a message is at least one byte and its "\n", an event at least "data: " */
  } else {
    chunks++;
    chunk_bytes += c->n;
  }
  c->ts_state = TS_START;
}

static void chunk_started(struct conn *c) {
  if (c->n == 0) return drop(c, E_ENDED); /* the server ended the response */
  message_started(c);
  c->state = DATA;
}

/* A WebSocket frame's header is read: control frames are handled, data frames counted. */
static void frame_started(struct conn *c) {
  if (c->op == 0x8) return drop(c, E_ENDED); /* close */
  if (c->op == 0x9) { /* ping: an empty masked pong; uWS only needs to hear something */
    static const char pong[] = {(char)0x8a, (char)0x80, 0, 0, 0, 0};
    if (send(c->fd, pong, sizeof pong, MSG_NOSIGNAL) != (ssize_t)sizeof pong) return drop(c, E_WRITE);
  } else if (c->op <= 0x2) {
    message_started(c);
  }
  c->state = c->n ? WS_DATA : WS_HEAD;
}

static int hex(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* HTTP/1.1 response with chunked body: only enough to check the status, count chunks and scan their data. */
static void parse(struct conn *c, const char *p, size_t len) {
  const char *end = p + len;
  while (p < end && c->state > WAITING) {
    char ch = *p;
    switch (c->state) {
      case STATUS: /* "HTTP/1.1 200 OK": the status is characters 9-11 */
        if (c->line_chars >= 9 && c->line_chars < 12) c->n = c->n * 10 + (uint32_t)(ch - '0');
        if (c->line_chars < 255) c->line_chars++;
        if (ch == '\n') {
          if (c->n != (transport == WS ? 101u : 200u)) return drop(c, c->n == 404 ? E_HTTP404 : c->n == 503 ? E_HTTP503 : E_HTTP);
          c->state = HEADERS;
          c->line_chars = 0;
        }
        p++;
        break;
      case HEADERS: /* until an empty line */
        if (ch == '\n') {
          if (c->line_chars == 0) c->state = transport == WS ? WS_HEAD : SIZE, c->n = 0;
          c->line_chars = 0;
        } else if (ch != '\r') {
          c->line_chars = 1;
        }
        p++;
        break;
      case SIZE: {
        int d = hex(ch);
        if (d >= 0) {
          if (c->n > 0x0fffffff) return drop(c, E_PARSE);
          c->n = c->n * 16 + (uint32_t)d;
        } else if (ch == '\n') {
          chunk_started(c);
        } else if (ch == ';' || ch == ' ') {
          c->state = SIZE_EXT;
        } else if (ch != '\r') {
          return drop(c, E_PARSE);
        }
        p++;
        break;
      }
      case SIZE_EXT:
        if (ch == '\n') chunk_started(c);
        p++;
        break;
      case DATA: {
        size_t take = (size_t)(end - p) < c->n ? (size_t)(end - p) : c->n;
        scan_data(c, p, take);
        p += take;
        c->n -= (uint32_t)take;
        if (c->n == 0) c->state = DATA_END;
        break;
      }
      case DATA_END: /* the CRLF after the data */
        if (ch == '\n') c->state = SIZE, c->n = 0;
        p++;
        break;
      case WS_HEAD: /* FIN, opcode */
        c->op = (uint8_t)(ch & 0x0f);
        c->state = WS_LEN;
        p++;
        break;
      case WS_LEN: /* server frames are unmasked: the 7-bit length, or 126 / 127 for 2 / 8 more bytes */
        c->n = (uint8_t)ch & 0x7f;
        p++;
        if (c->n >= 126) {
          c->skip = c->n == 126 ? 2 : 8;
          c->n = 0;
          c->state = WS_EXT;
        } else {
          frame_started(c);
        }
        break;
      case WS_EXT:
        if (c->n > 0x00ffffff) return drop(c, E_PARSE);
        c->n = (c->n << 8) | (uint8_t)ch;
        p++;
        if (--c->skip == 0) frame_started(c);
        break;
      case WS_DATA: {
        size_t take = (size_t)(end - p) < c->n ? (size_t)(end - p) : c->n;
        if (c->op <= 0x2) scan_data(c, p, take);
        p += take;
        c->n -= (uint32_t)take;
        if (c->n == 0) c->state = WS_HEAD;
        break;
      }
    }
  }
}

static void readable(struct conn *c) {
  static char buf[65536];
  union {
    char space[CMSG_SPACE(sizeof(struct timeval))];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
  for (;;) {
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space, .msg_controllen = sizeof control.space};
    ssize_t r = recvmsg(c->fd, &msg, 0);
    if (r > 0) {
      bytes += (uint64_t)r;
      read_us = clock_us(CLOCK_REALTIME);
      struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
      arrived_us = read_us; /* no timestamp: timed at the read */
      if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMP) {
        struct timeval tv;
        memcpy(&tv, CMSG_DATA(cm), sizeof tv);
        uint64_t t = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
        if (t <= read_us) arrived_us = t;
      }
      parse(c, buf, (size_t)r);
      /* Edge-triggered: a short read emptied the socket; new data raises a new edge. */
      if (c->state <= WAITING || (size_t)r < sizeof buf) return;
    } else if (r == 0) {
      return drop(c, E_EOF);
    } else {
      if (errno == EAGAIN || errno == EINTR) return;
      return drop(c, errno == ECONNRESET ? E_RESET : E_READ);
    }
  }
}

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static int parse_slice(const char *text, struct slice *s) {
  char ip[64];
  unsigned first_id, count, first_port, spare_first = 1, spare_last = 0; /* no spare ports unless given */
  int n = sscanf(text, "%63[^:]:%u:%u:%u:%u-%u", ip, &first_id, &count, &first_port, &spare_first, &spare_last);
  if (n != 4 && n != 6) return -1;
  if (first_port == 0 || first_port + count - 1 > 65535 || spare_first == 0 || spare_last > 65535) return -1;
  s->src.sin_family = AF_INET;
  if (inet_pton(AF_INET, ip, &s->src.sin_addr) != 1) return -1;
  s->first_id = first_id, s->count = count;
  s->port = first_port, s->end = first_port + count - 1, s->spare_first = spare_first, s->spare_last = spare_last;
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 12) {
    fprintf(stderr, "usage: %s HOST PORT RATE INFLIGHT INTERVAL_MS DEADLINE_S READ_EVERY_MS chunked|sse|ws RECONNECT TOPICS SOURCE_IP:FIRST_ID:COUNT:FIRST_PORT[:SPARE_FIRST-SPARE_LAST]...\n", argv[0]);
    return 2;
  }
  host = argv[1];
  dest.sin_family = AF_INET;
  dest.sin_port = htons((uint16_t)atoi(argv[2]));
  if (inet_pton(AF_INET, host, &dest.sin_addr) != 1) {
    fprintf(stderr, "flood-worker: %s is not an IPv4 address\n", host);
    return 2;
  }
  double rate = atof(argv[3]);
  uint64_t max_inflight = strtoull(argv[4], NULL, 10);
  uint64_t interval_us = strtoull(argv[5], NULL, 10) * 1000u;
  uint64_t deadline_us = (uint64_t)(atof(argv[6]) * 1e6);
  read_every_ms = atoi(argv[7]);
  transport = !strcmp(argv[8], "sse") ? SSE : !strcmp(argv[8], "ws") ? WS : !strcmp(argv[8], "chunked") ? CHUNKED : -1;
  if (transport < 0) {
    fprintf(stderr, "flood-worker: transport '%s' is not chunked, sse or ws\n", argv[8]);
    return 2;
  }
  reconnect = atoi(argv[9]);
  topics = (uint32_t)strtoul(argv[10], NULL, 10);
  srandom((unsigned)getpid());
  nslices = (uint32_t)(argc - 11);
  slices = calloc(nslices, sizeof *slices);
  for (uint32_t i = 0; i < nslices; i++) {
    if (parse_slice(argv[11 + i], &slices[i]) < 0) {
      fprintf(stderr, "flood-worker: bad slice '%s' (SOURCE_IP:FIRST_ID:COUNT:FIRST_PORT[:SPARE_FIRST-SPARE_LAST], ports 1-65535)\n", argv[11 + i]);
      return 2;
    }
    slices[i].offset = total;
    total += slices[i].count;
  }
  struct rlimit files;
  getrlimit(RLIMIT_NOFILE, &files);
  if ((uint64_t)total + 16 > files.rlim_cur) {
    fprintf(stderr, "flood-worker: %u connections do not fit the open-file limit %lu\n", total, (unsigned long)files.rlim_cur);
    return 2;
  }
  conns = calloc(total ? total : 1, sizeof *conns);

  struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: epoll_wait returns EINTR */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  /*
   * SCHED_BATCH: a worker woken by a chunk does not preempt the edge that wrote
   * it, so an edge writes its whole batch and the worker reads many sockets per
   * wake-up instead of one context switch per chunk. Needs no privilege. The
   * delivery times do not suffer: they are the kernel's receive timestamps.
   */
  struct sched_param batch = {.sched_priority = 0};
  if (sched_setscheduler(0, SCHED_BATCH, &batch) != 0) perror("flood-worker: SCHED_BATCH");

  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event stdin_ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
  epoll_ctl(ep, EPOLL_CTL_ADD, 0, &stdin_ev); /* fails harmlessly when stdin is not a pipe */

  uint64_t t0 = t0_us = clock_us(CLOCK_MONOTONIC), next_report = t0 + interval_us, next_sweep = t0 + 1000000u, next_retry = t0;
  uint32_t next = 0;
  struct slice *s = slices;
  struct epoll_event events[1024];
  while (!stop) {
    uint64_t now = clock_us(CLOCK_MONOTONIC);
    if (now - t0 >= deadline_us) break;
    int timeout_ms = (int)((next_report - now) / 1000u) + 1;
    if (next < total) {
      uint64_t due = rate > 0 ? (uint64_t)((double)(now - t0) * rate / 1e6) + 1 : total;
      if (due > total) due = total;
      for (int batch = 0; next < due && inflight < max_inflight && batch < 1024; batch++, next++) {
        while (next >= s->offset + s->count) s++;
        start(next, s, ep);
      }
      if (next < total && inflight < max_inflight) {
        /* Sleep until the next connect is due, not a fixed 1 ms: fifty workers polling every 1 ms cost a core's worth of wake-ups. */
        uint64_t due_us = rate > 0 ? (uint64_t)((double)next * 1e6 / rate) : 0, elapsed = now - t0;
        int wait_ms = due_us > elapsed ? (int)((due_us - elapsed + 999) / 1000) : 0;
        if (wait_ms < timeout_ms) timeout_ms = wait_ms;
      }
    }
    if (!ramp_us && next == total && inflight == 0) {
      ramp_us = now - t0;
      ramp_cpu_us = cpu_us();
    }
    int polling = ramp_us && read_every_ms > 0; /* see READ_EVERY_MS above */
    int n = epoll_wait(ep, events, 1024, polling ? 0 : timeout_ms);
    for (int i = 0; i < n; i++) {
      uint32_t index = events[i].data.u32;
      if (index == UINT32_MAX) {
        char b[64];
        if (read(0, b, sizeof b) <= 0) stop = 1;
        continue;
      }
      struct conn *c = &conns[index];
      if (c->state <= WAITING) continue; /* closed earlier in this batch */
      if (c->state == CONNECTING) {
        if (!(events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) continue;
        connected_now(index);
        if (c->state <= WAITING) continue;
      }
      if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) readable(c);
    }
    now = clock_us(CLOCK_MONOTONIC);
    if (now >= next_sweep) { /* give up on connects that were never welcomed */
      for (uint32_t i = 0; i < next; i++)
        if (conns[i].state > WAITING && !conns[i].welcomed && now - conns[i].started_us > 10000000u) drop(&conns[i], E_TIMEOUT);
      next_sweep = now + 1000000u;
    }
    if (waiting && now >= next_retry) { /* reconnects that are due */
      uint32_t now_ms = (uint32_t)((now - t0) / 1000u);
      struct slice *rs = slices;
      for (uint32_t i = 0; i < next; i++) {
        while (i >= rs->offset + rs->count) rs++;
        if (conns[i].state != WAITING || conns[i].due_ms > now_ms) continue;
        waiting--;
        reconnects++;
        start(i, rs, ep);
      }
      next_retry = now + RETRY_SWEEP_US;
    }
    if (now >= next_report) {
      report();
      next_report = now + interval_us;
    }
    if (polling && n < 1024) {
      int wait_ms = read_every_ms < timeout_ms ? read_every_ms : timeout_ms;
      struct timespec ts = {.tv_sec = wait_ms / 1000, .tv_nsec = (long)(wait_ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    }
  }
  held = open_now;
  for (uint32_t i = 0; i < next; i++) {
    if (conns[i].state <= WAITING) continue;
    close(conns[i].fd); /* SO_LINGER 0: RST */
    conns[i].state = IDLE;
  }
  open_now = 0;
  report();
  puts("E");
  fflush(stdout);
  return 0;
}
