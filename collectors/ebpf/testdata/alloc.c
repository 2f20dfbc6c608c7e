/* The allocation tracer's test target: built by the tests with
 *   gcc -O1 -g -fno-omit-frame-pointer alloc.c -o alloc
 * It counts what it allocates itself and prints it every 50 ms, so that a
 * test compares the profile with the program's own counters over the
 * window (CLOCK_REALTIME ns, the process's CPU ns, then counters):
 *
 *   leak SECS RATE      churn_small() allocates and frees 16-256 bytes in a
 *                       loop; leak_slowly() keeps 1-8 KiB blocks, RATE
 *                       bytes a second. Prints
 *                       "stat T CPU CHURN_CALLS CHURN_BYTES LEAK_CALLS LEAK_BYTES"
 *   apis SECS RATE      each of via_malloc, via_calloc, via_realloc
 *                       (realloc(NULL, n/2) then realloc to n), via_memalign
 *                       (alignment 16: glibc calls malloc inside),
 *                       via_posix_memalign, via_aligned_alloc and via_valloc
 *                       keeps RATE bytes a second. Prints
 *                       "stat T CPU B1 ... B7" (bytes kept by each) and
 *                       "realloc T CPU FIRST" (the bytes of the first,
 *                       freed, half of via_realloc)
 *   bench SECS WORK     the malloc-heavy target: serve_request() makes 4
 *                       allocations of 32-512 bytes, writes them, mixes
 *                       each WORK rounds and frees them. Prints
 *                       "stat T CPU REQUESTS ALLOCS"
 *   forkleak RATE       forks a child that runs leak, reads a line from
 *                       stdin, forks a second; both print "stat" lines as
 *                       leak does, prefixed with "PID "
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile uint64_t sink;
static const char *prefix = "";

static int64_t ns(clockid_t c)
{
	struct timespec t;
	clock_gettime(c, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static uint32_t rng = 2463534242u;
static uint32_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

struct block {
	struct block *next;
};
static struct block *kept;

static void keep(void *p, size_t n)
{
	memset(p, 0x5a, n);
	struct block *b = p;
	b->next = kept;
	kept = b;
}

static uint64_t churn_calls, churn_bytes, leak_calls, leak_bytes;

__attribute__((noinline)) void churn_small(void)
{
	for (int i = 0; i < 64; i++) {
		size_t n = 16 + next() % 241;
		char *p = malloc(n);
		memset(p, i, n);
		sink += p[n / 2];
		free(p);
		churn_calls++;
		churn_bytes += n;
	}
}

__attribute__((noinline)) void leak_slowly(void)
{
	size_t n = 1024 + next() % 7169;
	keep(malloc(n), n);
	leak_calls++;
	leak_bytes += n;
}

static void leak(double secs, double rate)
{
	int64_t t0 = ns(CLOCK_MONOTONIC), end = t0 + (int64_t)(secs * 1e9), next_print = t0;
	for (;;) {
		churn_small();
		int64_t t = ns(CLOCK_MONOTONIC);
		while (leak_bytes < rate * (t - t0) / 1e9)
			leak_slowly();
		if (t >= next_print) {
			printf("%sstat %lld %lld %llu %llu %llu %llu\n", prefix, (long long)ns(CLOCK_REALTIME), (long long)ns(CLOCK_PROCESS_CPUTIME_ID),
			       (unsigned long long)churn_calls, (unsigned long long)churn_bytes, (unsigned long long)leak_calls, (unsigned long long)leak_bytes);
			next_print += 50000000;
		}
		if (t >= end)
			return;
	}
}

static uint64_t api_bytes[7], realloc_first;

__attribute__((noinline)) void via_malloc(size_t n)
{
	keep(malloc(n), n);
	api_bytes[0] += n;
}

__attribute__((noinline)) void via_calloc(size_t n)
{
	keep(calloc(n / 16, 16), n / 16 * 16);
	api_bytes[1] += n / 16 * 16;
}

__attribute__((noinline)) void via_realloc(size_t n)
{
	void *p = realloc(NULL, n / 2);
	memset(p, 1, n / 2);
	realloc_first += n / 2;
	keep(realloc(p, n), n);
	api_bytes[2] += n;
}

__attribute__((noinline)) void via_memalign(size_t n)
{
	keep(memalign(16, n), n);
	api_bytes[3] += n;
}

__attribute__((noinline)) void via_posix_memalign(size_t n)
{
	void *p = NULL;
	if (posix_memalign(&p, 64, n))
		return;
	keep(p, n);
	api_bytes[4] += n;
}

__attribute__((noinline)) void via_aligned_alloc(size_t n)
{
	n = (n + 63) & ~(size_t)63;
	keep(aligned_alloc(64, n), n);
	api_bytes[5] += n;
}

__attribute__((noinline)) void via_valloc(size_t n)
{
	keep(valloc(n), n);
	api_bytes[6] += n;
}

static void apis(double secs, double rate)
{
	void (*fs[7])(size_t) = {via_malloc, via_calloc, via_realloc, via_memalign, via_posix_memalign, via_aligned_alloc, via_valloc};
	int64_t t0 = ns(CLOCK_MONOTONIC), end = t0 + (int64_t)(secs * 1e9), next_print = t0;
	for (;;) {
		int64_t t = ns(CLOCK_MONOTONIC);
		for (int i = 0; i < 7; i++)
			while (api_bytes[i] < rate * (t - t0) / 1e9)
				fs[i](1024 + next() % 7169);
		if (t >= next_print) {
			printf("stat %lld %lld", (long long)ns(CLOCK_REALTIME), (long long)ns(CLOCK_PROCESS_CPUTIME_ID));
			for (int i = 0; i < 7; i++)
				printf(" %llu", (unsigned long long)api_bytes[i]);
			printf("\nrealloc %lld %lld %llu\n", (long long)ns(CLOCK_REALTIME), (long long)ns(CLOCK_PROCESS_CPUTIME_ID), (unsigned long long)realloc_first);
			next_print += 50000000;
		}
		if (t >= end)
			return;
		struct timespec d = {0, 1000000};
		nanosleep(&d, NULL);
	}
}

__attribute__((noinline)) uint64_t mix(char *p, size_t n, int work)
{
	uint64_t h = 1469598103934665603ull;
	for (int r = 0; r < work; r++)
		for (size_t i = 0; i < n; i += 64)
			h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
	return h;
}

__attribute__((noinline)) void serve_request(int work)
{
	char *b[4];
	size_t n[4];
	for (int i = 0; i < 4; i++) {
		n[i] = 32 + next() % 481;
		b[i] = malloc(n[i]);
		memset(b[i], i, n[i]);
	}
	for (int i = 0; i < 4; i++) {
		sink += mix(b[i], n[i], work);
		free(b[i]);
	}
}

static void bench(double secs, int work)
{
	uint64_t requests = 0;
	int64_t t0 = ns(CLOCK_MONOTONIC), end = t0 + (int64_t)(secs * 1e9), next_print = t0;
	for (;;) {
		for (int i = 0; i < 64; i++)
			serve_request(work);
		requests += 64;
		int64_t t = ns(CLOCK_MONOTONIC);
		if (t >= next_print) {
			printf("stat %lld %lld %llu %llu\n", (long long)ns(CLOCK_REALTIME), (long long)ns(CLOCK_PROCESS_CPUTIME_ID),
			       (unsigned long long)requests, (unsigned long long)requests * 4);
			next_print += 50000000;
		}
		if (t >= end)
			return;
	}
}

static pid_t spawn_leaker(double rate)
{
	pid_t p = fork();
	if (p == 0) {
		static char buf[32];
		snprintf(buf, sizeof(buf), "%d ", getpid());
		prefix = buf;
		rng ^= (uint32_t)getpid() * 2654435761u;
		leak(3600, rate);
		_exit(0);
	}
	return p;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *mode = argc > 1 ? argv[1] : "leak";
	double a = argc > 2 ? atof(argv[2]) : 10;
	double b = argc > 3 ? atof(argv[3]) : 4e6;
	if (!strcmp(mode, "leak")) {
		leak(a, b);
	} else if (!strcmp(mode, "apis")) {
		apis(a, b);
	} else if (!strcmp(mode, "bench")) {
		bench(a, (int)b);
	} else if (!strcmp(mode, "forkleak")) {
		spawn_leaker(a);
		char line[16];
		if (!fgets(line, sizeof(line), stdin))
			return 1;
		spawn_leaker(a);
		while (wait(NULL) > 0)
			;
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	return 0;
}
