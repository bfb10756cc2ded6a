/* Compiled request/response load generator for scripts/loadtest.py (built by scripts/setup.sh).
 *
 *   rrgen serve PORT SECONDS            echo server: answers each request with its own bytes
 *   rrgen crr HOST PORT SECONDS PROCS   a new TCP connection per request (connect, 64 B, answer, close)
 *   rrgen rr HOST PORT SECONDS          request/response on one connection (64 B each way)
 *
 * Clients print one JSON line: operations, rate per second and latency percentiles in microseconds.
 * IPv4 only (the lab's addresses); every loop is bounded by SECONDS. A compiled generator so that the
 * baseline measures the path, not a Python client (which caps near 4k connections/s).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REQ 64                 /* request and answer size in bytes */
#define MAX_SAMPLES 2000000    /* latency samples kept per process (bounded memory) */
#define MAX_PROCS 16           /* parallel client processes for crr */
#define MAX_SECONDS 600

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int serve(int port, double seconds) {
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) {
        perror("bind/listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("ready\n");
    fflush(stdout);
    double end = now_s() + seconds;
    char buf[4096];
    while (now_s() < end) {
        int n = epoll_wait(ep, evs, 256, 200);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            ssize_t got = read(fd, buf, sizeof buf);
            if (got <= 0) {
                if (got == 0 || (errno != EAGAIN && errno != EINTR)) close(fd);
                continue;
            }
            if (write(fd, buf, got) < 0) close(fd);
        }
    }
    return 0;
}

static int connect_to(const char *host, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) {
        close(s);
        return -1;
    }
    return s;
}

/* One request and its full answer; 0 on success. */
static int exchange(int s) {
    char req[REQ], ans[REQ];
    memset(req, 'q', REQ);
    if (write(s, req, REQ) != REQ) return -1;
    for (int got = 0; got < REQ;) {
        ssize_t n = read(s, ans + got, REQ - got);
        if (n <= 0) return -1;
        got += n;
    }
    return 0;
}

/* Run `crr` (new connection each time) or `rr` for `seconds`; write ops, errors and sorted samples. */
static long run_client(const char *host, int port, double seconds, int crr, float *lat, long *errors) {
    long ops = 0;
    double end = now_s() + seconds;
    int s = crr ? -1 : connect_to(host, port);
    if (!crr && s < 0) return 0;
    while (now_s() < end) {
        double t0 = now_s();
        if (crr) s = connect_to(host, port);
        if (s < 0 || exchange(s)) {
            (*errors)++;
            if (s >= 0) close(s);
            if (!crr) return ops;
            continue;
        }
        if (crr) {
            struct linger l = {1, 0}; /* close with a reset: no TIME_WAIT pile-up of the client's ports */
            setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
            close(s);
        }
        if (ops < MAX_SAMPLES) lat[ops] = (float)((now_s() - t0) * 1e6);
        ops++;
    }
    if (!crr) close(s);
    return ops;
}

static void report(const char *what, long ops, long errors, double seconds, float *lat, long n) {
    qsort(lat, n, sizeof *lat, cmp_float);
    double p50 = n ? lat[n / 2] : 0, p99 = n ? lat[(long)(n * 0.99)] : 0;
    printf("{\"test\": \"%s\", \"ops\": %ld, \"errors\": %ld, \"per_s\": %.1f, \"p50_us\": %.1f, "
           "\"p99_us\": %.1f}\n", what, ops, errors, ops / seconds, p50, p99);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 4 && !strcmp(argv[1], "serve")) {
        double seconds = atof(argv[3]);
        return serve(atoi(argv[2]), seconds > MAX_SECONDS * 10 ? MAX_SECONDS * 10 : seconds);
    }
    if (argc < 5 || (strcmp(argv[1], "crr") && strcmp(argv[1], "rr"))) {
        fprintf(stderr, "usage: rrgen serve PORT SECONDS | crr HOST PORT SECONDS PROCS | rr HOST PORT SECONDS\n");
        return 2;
    }
    int crr = !strcmp(argv[1], "crr"), port = atoi(argv[3]);
    double seconds = atof(argv[4]);
    if (seconds > MAX_SECONDS) seconds = MAX_SECONDS;
    int procs = crr && argc > 5 ? atoi(argv[5]) : 1;
    if (procs < 1) procs = 1;
    if (procs > MAX_PROCS) procs = MAX_PROCS;
    long per = MAX_SAMPLES / procs;
    float *lat = malloc(sizeof(float) * MAX_SAMPLES);
    if (!lat) return 1;
    int pipes[MAX_PROCS][2];
    for (int p = 0; p < procs; p++) {
        if (pipe(pipes[p])) return 1;
        if (fork() == 0) { /* each child: its own loop; counts and samples back through its pipe */
            long errors = 0, ops = run_client(argv[2], port, seconds, crr, lat, &errors);
            long n = ops < per ? ops : per;
            long head[3] = {ops, errors, n};
            if (write(pipes[p][1], head, sizeof head) != sizeof head) _exit(1);
            for (long off = 0; off < n * (long)sizeof(float);) {
                ssize_t w = write(pipes[p][1], (char *)lat + off, n * sizeof(float) - off);
                if (w <= 0) _exit(1);
                off += w;
            }
            _exit(0);
        }
        close(pipes[p][1]);
    }
    long ops = 0, errors = 0, n = 0;
    for (int p = 0; p < procs; p++) {
        long head[3];
        if (read(pipes[p][0], head, sizeof head) != sizeof head) continue;
        ops += head[0];
        errors += head[1];
        for (long off = 0; off < head[2] * (long)sizeof(float);) {
            ssize_t r = read(pipes[p][0], (char *)(lat + n) + off, head[2] * sizeof(float) - off);
            if (r <= 0) break;
            off += r;
        }
        n += head[2];
    }
    while (wait(NULL) > 0) {}
    report(argv[1], ops, errors, seconds, lat, n);
    return 0;
}
