/* workload.c: the process formats/perfdata's tests record with perf.
 * Threads with their own names do different work for argv[1] seconds:
 *   spinner  - a compute loop, sometimes through 150 nested calls (deeper
 *              than perf script's 127-frame limit);
 *   writer   - write(2) to /dev/null: kernel stacks;
 *   sleeper  - 2 ms sleeps: off-CPU time;
 *   x        - the main thread, a one-letter comm (which
 *              stackcollapse-perf.pl reads oddly), sorting with qsort (a
 *              libc frame calling back into this program).
 * Build: gcc -O1 -g -fno-omit-frame-pointer -pthread workload.c */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

static volatile int stop;
static volatile unsigned long sink;

static __attribute__((noinline)) void burn(int n) {
	for (int i = 0; i < n; i++)
		sink += (unsigned long)i * 2654435761u;
}

static __attribute__((noinline)) int deep(int d) {
	if (d == 0) {
		burn(20000);
		return 0;
	}
	return deep(d - 1) + 1;
}

static void *spinner(void *arg) {
	prctl(PR_SET_NAME, "spinner", 0, 0, 0);
	for (int k = 0; !stop; k++) {
		if (k % 8 == 0)
			sink += deep(150);
		else
			burn(200000);
	}
	return NULL;
}

static void *writer(void *arg) {
	prctl(PR_SET_NAME, "writer", 0, 0, 0);
	int fd = open("/dev/null", O_WRONLY);
	char buf[4096];
	memset(buf, 'x', sizeof buf);
	while (!stop)
		if (write(fd, buf, sizeof buf) < 0)
			break;
	close(fd);
	return NULL;
}

static void *sleeper(void *arg) {
	prctl(PR_SET_NAME, "sleeper", 0, 0, 0);
	struct timespec ts = {0, 2000000};
	while (!stop)
		nanosleep(&ts, NULL);
	return NULL;
}

static int cmp(const void *a, const void *b) {
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv) {
	double secs = argc > 1 ? atof(argv[1]) : 1;
	prctl(PR_SET_NAME, "x", 0, 0, 0);
	pthread_t t[3];
	pthread_create(&t[0], NULL, spinner, NULL);
	pthread_create(&t[1], NULL, writer, NULL);
	pthread_create(&t[2], NULL, sleeper, NULL);
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	int n = 20000, *v = malloc(n * sizeof *v);
	do {
		for (int i = 0; i < n; i++)
			v[i] = rand();
		qsort(v, n, sizeof *v, cmp);
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 < secs);
	stop = 1;
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	fprintf(stderr, "%lu\n", sink); /* stderr: stdout may be perf record -o - */
	return 0;
}
