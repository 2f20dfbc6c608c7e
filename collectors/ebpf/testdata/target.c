/* The tests' native target: built by the tests with
 *   gcc -O1 -g -fno-omit-frame-pointer -pthread target.c -o target
 * Modes:
 *   spin                 burn CPU in burn_cpu() forever
 *   fork DELAY_MS        fork two children that burn CPU, read a line from stdin, fork a
 *                        third DELAY_MS later; wait
 *   sleep                a thread loops nanosleep(1 ms) in sleep_loop(); main joins it
 *   pingpong SECONDS [PLACE]
 *                        two threads ping-pong a byte through two pipes for SECONDS,
 *                        printing "rt N T" (round trips so far, CLOCK_MONOTONIC
 *                        seconds) every 100 ms, then "round_trips N seconds S";
 *                        PLACE "one": both threads on CPU 0, "two": one on CPU 0 and
 *                        one on CPU 1 (else where the scheduler puts them)
 *   spinsleep            a thread burns CPU; another loops nanosleep in sleep_loop()
 *   shortsleep           the main thread loops 50 us nanosleeps in short_nap(), printing
 *                        "slept N T" (nanoseconds spent in nanosleep so far, CLOCK_MONOTONIC
 *                        seconds) every 100 ms
 *   blocked              a thread "reader" blocks in wait_input() reading lines from
 *                        stdin, another ("napper") in long_nap(), a nanosleep of an
 *                        hour; prints "ready" when both have started, then for each
 *                        read "read_blocked S" (CLOCK_MONOTONIC seconds it blocked);
 *                        exits after a line that starts with "q", or end of input
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

__attribute__((noinline)) void burn_cpu(void)
{
	for (;;)
		for (unsigned long i = 0; i < 1000000; i++)
			sink += i;
}

__attribute__((noinline)) void sleep_loop(void)
{
	struct timespec ts = {0, 1000000};
	for (;;)
		nanosleep(&ts, NULL);
}

static void *sleeper(void *arg)
{
	prctl(PR_SET_NAME, "sleeper");
	sleep_loop();
	return NULL;
}

static void *burner(void *arg)
{
	prctl(PR_SET_NAME, "burner");
	burn_cpu();
	return NULL;
}

static double now(void);

__attribute__((noinline)) void wait_input(void)
{
	char line[64];
	for (;;) {
		double t = now();
		ssize_t n = read(0, line, sizeof(line));
		printf("read_blocked %.6f\n", now() - t);
		if (n <= 0 || line[0] == 'q')
			return;
	}
}

static void *reader(void *arg)
{
	prctl(PR_SET_NAME, "reader");
	wait_input();
	return NULL;
}

__attribute__((noinline)) void long_nap(void)
{
	struct timespec ts = {3600, 0};
	nanosleep(&ts, NULL);
}

static void *napper(void *arg)
{
	prctl(PR_SET_NAME, "napper");
	long_nap();
	return NULL;
}

static int a[2], b[2];
static volatile int stop;

__attribute__((noinline)) void echo_loop(void)
{
	char c;
	for (;;) {
		if (read(a[0], &c, 1) != 1)
			return;
		if (write(b[1], &c, 1) != 1)
			return;
	}
}

static int echo_cpu = -1;

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *echo(void *arg)
{
	prctl(PR_SET_NAME, "echo");
	if (echo_cpu >= 0)
		pin(echo_cpu);
	echo_loop();
	return NULL;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long ping_loop(double secs)
{
	char c = 'x';
	unsigned long n = 0;
	double t = now(), end = t + secs, next = t + 0.1;
	while (!stop) {
		if (write(a[1], &c, 1) != 1 || read(b[0], &c, 1) != 1)
			break;
		n++;
		if ((n & 255) == 0) {
			t = now();
			if (t >= next) {
				printf("rt %lu %.6f\n", n, t);
				next += 0.1;
			}
			if (t >= end)
				break;
		}
	}
	return n;
}

static unsigned long long mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

__attribute__((noinline)) void short_nap(void)
{
	struct timespec ts = {0, 50000};
	unsigned long long slept = 0, next = mono_ns() + 100000000ULL;
	for (;;) {
		unsigned long long t0 = mono_ns();
		nanosleep(&ts, NULL);
		unsigned long long t1 = mono_ns();
		slept += t1 - t0;
		if (t1 >= next) {
			printf("slept %llu %.6f\n", slept, t1 / 1e9);
			next += 100000000ULL;
		}
	}
}

static pid_t spawn_burner(void)
{
	pid_t p = fork();
	if (p == 0) {
		prctl(PR_SET_NAME, "child");
		burn_cpu();
	}
	return p;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	const char *mode = argc > 1 ? argv[1] : "spin";
	if (!strcmp(mode, "spin")) {
		burn_cpu();
	} else if (!strcmp(mode, "fork")) {
		int delay = argc > 2 ? atoi(argv[2]) : 2500;
		spawn_burner();
		spawn_burner();
		printf("forked 2\n");
		char line[16];
		if (!fgets(line, sizeof(line), stdin))
			return 1;
		usleep(delay * 1000);
		spawn_burner();
		printf("forked 3\n");
		while (wait(NULL) > 0)
			;
	} else if (!strcmp(mode, "shortsleep")) {
		short_nap();
	} else if (!strcmp(mode, "sleep") || !strcmp(mode, "spinsleep")) {
		pthread_t t, u;
		pthread_create(&t, NULL, sleeper, NULL);
		if (!strcmp(mode, "spinsleep"))
			pthread_create(&u, NULL, burner, NULL);
		pthread_join(t, NULL);
	} else if (!strcmp(mode, "blocked")) {
		pthread_t r, n;
		pthread_create(&n, NULL, napper, NULL);
		pthread_create(&r, NULL, reader, NULL);
		usleep(20000); /* both are in their system calls */
		printf("ready\n");
		pthread_join(r, NULL);
		return 0;
	} else if (!strcmp(mode, "pingpong")) {
		double secs = argc > 2 ? atof(argv[2]) : 5;
		const char *place = argc > 3 ? argv[3] : "";
		pthread_t t;
		if (pipe(a) || pipe(b))
			return 1;
		if (!strcmp(place, "one") || !strcmp(place, "two")) {
			pin(0);
			echo_cpu = place[1] == 'n' ? 0 : 1;
		}
		pthread_create(&t, NULL, echo, NULL);
		double t0 = now();
		unsigned long n = ping_loop(secs);
		printf("round_trips %lu seconds %.3f\n", n, now() - t0);
		return 0;
	}
	return 0;
}
