/*
 * The floor under c1m's deliveries on this box: a bare C stream server with
 * nothing of c1m in it (no bus, no router, no JavaScript), for `npm run
 * bench:floor` (bench/floor.ts). It shows what the kernel, the
 * loopback and the load generator alone cost per delivered chunk, so c1m's own
 * cost is whatever it spends above this.
 *
 *   floor-server PORT BATCH_MS CAPACITY
 *
 * Several share PORT with SO_REUSEPORT, each holding at most CAPACITY streams
 * (under its open-file limit), like c1m's edges: a full one stops listening.
 * Every stream is TCP_NODELAY, as uWS makes c1m's. Each answers GET /test/<id> with a chunked response and a
 * welcome chunk, like c1m, then every BATCH_MS writes the chunks that fell due
 * to random streams of its own, one send() each, at the rate its stdin last
 * set ("R <chunks per second>"). A chunk carries t=<the time it fell due>, so
 * the flood's delivery latency counts this server falling behind too. "B" on
 * stdin is the hub fan-out (bench/hub.ts): one chunk, stamped with the time it
 * starts, to every open stream, one send() each. Every
 * second it prints "S open=N chunks=N blocked=N cpu_us=N" (blocked: writes the
 * socket did not take whole, dropped). Stops on EOF on stdin or SIGTERM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

#define LISTENER UINT32_MAX
#define STDIN (UINT32_MAX - 1)
#define MAX_WRITES_PER_BATCH 65536

static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n"
    "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    "8\r\nwelcome\n\r\n";

/* Per descriptor: how much of the request's blank line was seen (4: answered), and where it sits in `open`. */
static uint8_t *matched;
static uint32_t *slot;
static int *open_fds; /* answered streams, for random picks */
static uint32_t nopen, nconns; /* answered streams; all accepted connections */
static uint64_t chunks, blocked;
static volatile sig_atomic_t stop;

static uint64_t clock_us(clockid_t id) {
  struct timespec t;
  clock_gettime(id, &t);
  return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

static uint64_t cpu_us(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (uint64_t)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000u + (uint64_t)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

static void forget(int fd) {
  if (matched[fd] == 4) {
    uint32_t i = slot[fd];
    open_fds[i] = open_fds[--nopen];
    slot[open_fds[i]] = i;
  }
  slot[fd] = UINT32_MAX;
  matched[fd] = 0;
  nconns--;
  close(fd);
}

/* Reads the request (only its end matters: the blank line) and answers it once; EOF or an error closes. */
static void readable(int fd) {
  char buf[4096];
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return forget(fd);
    if (r < 0) return;
    for (ssize_t i = 0; i < r && matched[fd] < 4; i++) matched[fd] = buf[i] == "\r\n\r\n"[matched[fd]] ? matched[fd] + 1 : buf[i] == '\r';
    if (matched[fd] == 4 && slot[fd] == UINT32_MAX) {
      if (send(fd, RESPONSE, sizeof RESPONSE - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof RESPONSE - 1)) return forget(fd);
      slot[fd] = nopen;
      open_fds[nopen++] = fd;
    }
  }
}

/* One chunk stamped t=<due, ms>.<us>: "<hex length>\r\nt=...\n\r\n"; returns its length. */
static int stamped(char chunk[64], uint64_t due_us) {
  char body[40];
  int n = snprintf(body, sizeof body, "t=%lu.%03lu floor\n", (unsigned long)(due_us / 1000u), (unsigned long)(due_us % 1000u));
  return snprintf(chunk, 64, "%x\r\n%s\r\n", n, body);
}

static void write_to(int fd, const char *chunk, int len) {
  if (send(fd, chunk, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT) == len) chunks++;
  else blocked++;
}

/* One chunk to a random stream. */
static void write_one(uint64_t due_us) {
  char chunk[64];
  int len = stamped(chunk, due_us);
  write_to(open_fds[(uint32_t)random() % nopen], chunk, len);
}

/* The hub fan-out: one chunk to every open stream. */
static void write_all(void) {
  char chunk[64];
  int len = stamped(chunk, clock_us(CLOCK_REALTIME));
  for (uint32_t i = 0; i < nopen; i++) write_to(open_fds[i], chunk, len);
}

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s PORT BATCH_MS CAPACITY\n", argv[0]);
    return 2;
  }
  int port = atoi(argv[1]), batch_ms = atoi(argv[2]);
  uint32_t capacity = (uint32_t)strtoul(argv[3], NULL, 10);
  struct rlimit files;
  getrlimit(RLIMIT_NOFILE, &files);
  uint32_t fds = (uint32_t)(files.rlim_cur > 1u << 24 ? 1u << 24 : files.rlim_cur);
  if (batch_ms < 1 || capacity < 1 || capacity + 16 > fds) {
    fprintf(stderr, "floor-server: BATCH_MS must be >= 1 and CAPACITY from 1 to the open-file limit (%u) less 16\n", fds);
    return 2;
  }
  matched = calloc(fds, 1);
  slot = malloc(fds * sizeof *slot);
  open_fds = malloc(fds * sizeof *open_fds);
  memset(slot, 0xff, fds * sizeof *slot);

  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  srandom((unsigned)getpid());

  int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 65535) < 0) {
    perror("floor-server: listen");
    return 1;
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = LISTENER};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  ev.data.u32 = STDIN;
  epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
  printf("L port=%d capacity=%u\n", port, capacity);
  fflush(stdout);

  double rate = 0;
  uint64_t rate_since = clock_us(CLOCK_REALTIME), written = 0, next_report = clock_us(CLOCK_MONOTONIC) + 1000000u;
  struct epoll_event events[1024];
  char line[64];
  size_t line_len = 0;
  while (!stop) {
    int n = epoll_wait(ep, events, 1024, rate > 0 ? batch_ms : 1000);
    for (int i = 0; i < n; i++) {
      uint32_t id = events[i].data.u32;
      if (id == LISTENER) {
        int fd;
        while (lfd >= 0 && (fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          /* As uWS does for c1m's streams: every write leaves at once, rather than wait for the ACK of the one before (Nagle). */
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          ev.events = EPOLLIN | EPOLLRDHUP;
          ev.data.u32 = (uint32_t)fd;
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
          /* Full: stop listening, so the kernel hands new connections to the other servers on the port. */
          if (++nconns >= capacity) {
            close(lfd);
            lfd = -1;
            break;
          }
        }
      } else if (id == STDIN) {
        ssize_t r = read(0, line + line_len, sizeof line - 1 - line_len);
        if (r <= 0) stop = 1;
        else line_len += (size_t)r;
        char *nl;
        while ((nl = memchr(line, '\n', line_len))) {
          if (line[0] == 'R') rate = atof(line + 1), rate_since = clock_us(CLOCK_REALTIME), written = 0;
          else if (line[0] == 'B') write_all();
          line_len -= (size_t)(nl + 1 - line);
          memmove(line, nl + 1, line_len);
        }
        if (line_len == sizeof line - 1) line_len = 0; /* a line too long to be ours */
      } else {
        readable((int)id);
      }
    }
    if (rate > 0 && nopen > 0) {
      uint64_t now = clock_us(CLOCK_REALTIME);
      uint64_t due = (uint64_t)((double)(now - rate_since) * rate / 1e6);
      for (int k = 0; written < due && k < MAX_WRITES_PER_BATCH; k++, written++) write_one(rate_since + (uint64_t)((double)(written + 1) * 1e6 / rate));
    }
    uint64_t mono = clock_us(CLOCK_MONOTONIC);
    if (mono >= next_report) {
      printf("S open=%u chunks=%lu blocked=%lu cpu_us=%lu\n", nopen, (unsigned long)chunks, (unsigned long)blocked, (unsigned long)cpu_us());
      fflush(stdout);
      next_report = mono + 1000000u;
    }
  }
  return 0;
}
