/* The physical floor for `hean bench ring`, built at benchmark time with `cc -O3 -march=native -pthread`.
 *
 *   ring_floor pingpong CPU_A CPU_B SAMPLES ROUNDS
 *       Two threads pinned to CPU_A and CPU_B bounce one cache line: A writes an odd value, B waits for
 *       it and writes the next even value, A waits for that. Each sample times ROUNDS round trips with
 *       CLOCK_MONOTONIC; prints "rtt_ns p50 min p90 p99 max" over the per-sample mean round trips.
 *       One-way latency (the least a ring hop can cost) = round trip / 2.
 *
 *   ring_floor ring CPU_A CPU_B N CAPACITY
 *       A C SPSC ring of 64-byte records with cached cursors (the same design as hean.rings): the
 *       producer on CPU_A pushes N records one at a time, the consumer on CPU_B pops them one at a time.
 *       Prints "ring msgs_per_s checksum" (the checksum is the sum of seq, checked by the caller).
 *
 *   ring_floor hop CPU_A CPU_B N PERIOD_NS CAPACITY
 *       One-hop latency of the same C ring, measured exactly as `hean bench ring` measures HEAN's: the
 *       producer waits for each record's scheduled time (every PERIOD_NS), claims a slot, writes the
 *       record, stamps CLOCK_MONOTONIC and publishes; the consumer spins on the write cursor, reads the
 *       slot and records now - stamp. Prints "hop p50 min p90 p99 max" (ns, first 10% dropped as warm-up).
 *       This is what the cursor design costs in C: the WRITE line and the slot's line both cross cores.
 *
 * Why threads: a cache line moves between two CPUs the same way whether the two sides are threads or
 * processes; threads keep this file free of shared-memory setup.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LINE 64

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) {
        fprintf(stderr, "ring_floor: cannot pin to CPU %d\n", cpu);
        exit(2);
    }
}

static inline void pause_(void) { __builtin_ia32_pause(); }

/* ------------------------------------------------------------------------------------------------ */
/* ping-pong                                                                                          */
/* ------------------------------------------------------------------------------------------------ */
static _Alignas(128) _Atomic int64_t flag;
static _Atomic int go;
static int cpu_b;
static int64_t total_rounds;

static void *pong(void *arg) {
    (void)arg;
    pin(cpu_b);
    atomic_store(&go, 1);
    for (int64_t i = 0; i < total_rounds; i++) {
        int64_t want = 2 * i + 1;
        while (atomic_load_explicit(&flag, memory_order_acquire) != want) pause_();
        atomic_store_explicit(&flag, want + 1, memory_order_release);
    }
    return NULL;
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Sort v[0..n) and print "TAG p50 min p90 p99 max": the line every latency mode ends with. */
static void print_pcts(const char *tag, int64_t *v, int64_t n) {
    qsort(v, n, sizeof(int64_t), cmp64);
    printf("%s %lld %lld %lld %lld %lld\n", tag, (long long)v[n / 2], (long long)v[0], (long long)v[n * 9 / 10],
           (long long)v[n * 99 / 100], (long long)v[n - 1]);
}

static int pingpong(int a, int b, int samples, int rounds) {
    cpu_b = b;
    total_rounds = (int64_t)samples * rounds + rounds; /* first `rounds` are a warm-up */
    pthread_t t;
    pin(a);
    pthread_create(&t, NULL, pong, NULL);
    while (!atomic_load(&go)) pause_();
    int64_t *rtt = malloc(sizeof(int64_t) * samples);
    int64_t i = 0;
    for (int s = -1; s < samples; s++) {
        int64_t t0 = now_ns();
        for (int r = 0; r < rounds; r++, i++) {
            atomic_store_explicit(&flag, 2 * i + 1, memory_order_release);
            while (atomic_load_explicit(&flag, memory_order_acquire) != 2 * i + 2) pause_();
        }
        int64_t dt = now_ns() - t0;
        if (s >= 0) rtt[s] = dt / rounds;
    }
    pthread_join(t, NULL);
    print_pcts("rtt_ns", rtt, samples);
    free(rtt);
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* C ring: 64-byte records, cursors 128 bytes apart, each side caches the other's cursor              */
/* ------------------------------------------------------------------------------------------------ */
typedef struct {
    int64_t seq;
    int64_t f[7];
} rec_t;

static struct {
    _Alignas(128) _Atomic int64_t write;
    _Alignas(128) _Atomic int64_t read;
    _Alignas(128) int64_t cached_read; /* producer private */
    _Alignas(128) int64_t cached_write; /* consumer private */
    _Alignas(128) char pad[128];
} cur;
static rec_t *slots;
static int64_t cap, mask, n_msgs;
static int cons_cpu;
static int64_t cons_sum, cons_ns;

static void *consumer(void *arg) {
    (void)arg;
    pin(cons_cpu);
    atomic_store(&go, 1);
    int64_t r = 0, sum = 0, t0 = 0;
    while (r < n_msgs) {
        if (r == cur.cached_write) {
            cur.cached_write = atomic_load_explicit(&cur.write, memory_order_acquire);
            if (r == cur.cached_write) {
                pause_();
                continue;
            }
        }
        if (r == 0) t0 = now_ns();
        sum += slots[r & mask].seq;
        atomic_store_explicit(&cur.read, ++r, memory_order_release);
    }
    cons_ns = now_ns() - t0;
    cons_sum = sum;
    return NULL;
}

static int cring(int a, int b, int64_t n, int64_t capacity) {
    cons_cpu = b;
    n_msgs = n;
    cap = capacity;
    mask = capacity - 1;
    if (capacity <= 0 || (capacity & mask)) {
        fprintf(stderr, "ring_floor: capacity must be a power of two\n");
        return 2;
    }
    slots = aligned_alloc(128, sizeof(rec_t) * capacity);
    memset(slots, 0, sizeof(rec_t) * capacity);
    pthread_t t;
    pin(a);
    pthread_create(&t, NULL, consumer, NULL);
    while (!atomic_load(&go)) pause_();
    rec_t src = {0};
    for (int64_t w = 0; w < n; w++) {
        while (w - cur.cached_read == cap) {
            cur.cached_read = atomic_load_explicit(&cur.read, memory_order_acquire);
            if (w - cur.cached_read == cap) pause_();
        }
        src.seq = w;
        slots[w & mask] = src;
        atomic_store_explicit(&cur.write, w + 1, memory_order_release);
    }
    pthread_join(t, NULL);
    printf("ring %.1f %lld\n", (double)(n - 1) * 1e9 / (double)cons_ns, (long long)cons_sum);
    free(slots);
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* C ring hop: the ring above, paced, one record at a time, stamped just before publication           */
/* ------------------------------------------------------------------------------------------------ */
static int64_t *hop_ns;

static void *hop_consumer(void *arg) {
    (void)arg;
    pin(cons_cpu);
    atomic_store(&go, 1);
    int64_t r = 0;
    while (r < n_msgs) {
        if (r == cur.cached_write) {
            cur.cached_write = atomic_load_explicit(&cur.write, memory_order_acquire);
            if (r == cur.cached_write) continue; /* the latency loop spins without pause, as HEAN's does */
        }
        int64_t t = now_ns();
        hop_ns[r] = t - slots[r & mask].f[0];
        atomic_store_explicit(&cur.read, ++r, memory_order_release);
    }
    return NULL;
}

static int chop(int a, int b, int64_t n, int64_t period, int64_t capacity) {
    cons_cpu = b;
    n_msgs = n;
    cap = capacity;
    mask = capacity - 1;
    if (capacity <= 0 || (capacity & mask) || n < 10) {
        fprintf(stderr, "ring_floor: capacity must be a power of two and N >= 10\n");
        return 2;
    }
    slots = aligned_alloc(128, sizeof(rec_t) * capacity);
    memset(slots, 0, sizeof(rec_t) * capacity);
    hop_ns = calloc(n, sizeof(int64_t));
    pthread_t t;
    pin(a);
    pthread_create(&t, NULL, hop_consumer, NULL);
    while (!atomic_load(&go)) pause_();
    int64_t t_start = now_ns() + 1000000;
    for (int64_t w = 0; w < n; w++) {
        int64_t t_sched = t_start + w * period;
        while (now_ns() < t_sched) {
        }
        while (w - cur.cached_read == cap) {
            cur.cached_read = atomic_load_explicit(&cur.read, memory_order_acquire);
            if (w - cur.cached_read == cap) pause_();
        }
        rec_t *s = &slots[w & mask];
        s->seq = w;
        s->f[0] = now_ns(); /* stamped just before publishing */
        atomic_store_explicit(&cur.write, w + 1, memory_order_release);
    }
    pthread_join(t, NULL);
    int64_t skip = n / 10, m = n - skip;
    print_pcts("hop", hop_ns + skip, m);
    free(hop_ns);
    free(slots);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "pingpong") == 0)
        return pingpong(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    if (argc == 6 && strcmp(argv[1], "ring") == 0)
        return cring(atoi(argv[2]), atoi(argv[3]), atoll(argv[4]), atoll(argv[5]));
    if (argc == 7 && strcmp(argv[1], "hop") == 0)
        return chop(atoi(argv[2]), atoi(argv[3]), atoll(argv[4]), atoll(argv[5]), atoll(argv[6]));
    fprintf(stderr, "usage: ring_floor pingpong CPU_A CPU_B SAMPLES ROUNDS | ring CPU_A CPU_B N CAPACITY"
                    " | hop CPU_A CPU_B N PERIOD_NS CAPACITY\n");
    return 2;
}
