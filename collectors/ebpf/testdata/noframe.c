/* A native program built without frame pointers (-O2
 * -fomit-frame-pointer, as Debian builds nginx and Rust builds release):
 * frame-pointer unwinding ends after the sampled function, .eh_frame CFI
 * gives every frame. Two threads, each down a named call chain:
 *
 *   spinner: main → serve → handle_request → parse_body → hash_block (CPU)
 *            and handle_request → stamp_request → clock_gettime (CPU in
 *            the vDSO, code the kernel maps into every process)
 *            and serve → nocfi_call → cut_spin, through a function
 *            written in assembly without CFI: the walk stops there (cut)
 *   napper:  nap_thread → nap_outer → nap_inner → nanosleep (off CPU)
 *   blocked: block_thread → block_outer → block_inner → read of a pipe
 *            nobody writes (off CPU for the whole window: its stack is
 *            taken by the task iterator at the window's end)
 *
 * The functions pass values through so that none is a tail call and the
 * compiler keeps RBP for data: a frame-pointer walk of these stacks reads
 * garbage. filler_00..63 give the binary enough functions for profcap's
 * frame-pointer verdict, which needs 50.
 *
 * Usage: noframe SECS (exits after SECS, 0: until killed)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define NI __attribute__((noinline))

static volatile unsigned long sink;
static volatile int stop;

NI unsigned long hash_block(unsigned long seed)
{
	unsigned long a = seed, b = seed ^ 0x9e3779b97f4a7c15UL, c = seed * 31, d = ~seed, e = seed >> 3, f = seed << 5;
	for (int i = 0; i < 200000; i++) {
		a = a * 6364136223846793005UL + b;
		b ^= a >> 17;
		c += b * 13;
		d ^= c << 7;
		e += d ^ a;
		f = (f + e) * 3;
	}
	return a ^ b ^ c ^ d ^ e ^ f;
}

NI unsigned long parse_body(unsigned long x)
{
	unsigned long r = hash_block(x + 1);
	return r + x * 7;
}

NI unsigned long stamp_request(unsigned long x)
{
	struct timespec ts;
	unsigned long t = 0;
	for (int i = 0; i < 20000; i++) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		t += (unsigned long)ts.tv_nsec;
	}
	return t ^ x;
}

NI unsigned long handle_request(unsigned long x)
{
	unsigned long r = parse_body(x ^ 5);
	r ^= stamp_request(r);
	return r ^ (x >> 1);
}

NI unsigned long cut_spin(unsigned long x)
{
	for (int i = 0; i < 100000; i++)
		x = x * 2862933555777941757UL + 3037000493UL;
	return x;
}

/* No .cfi_* directives: no FDE, no unwind rows. */
unsigned long nocfi_call(unsigned long x);
__asm__(".text\n"
	".globl nocfi_call\n"
	".type nocfi_call, @function\n"
	"nocfi_call:\n"
	"\tsub $8, %rsp\n"
	"\tcall cut_spin\n"
	"\tadd $8, %rsp\n"
	"\tret\n"
	".size nocfi_call, .-nocfi_call\n");

NI void serve(void)
{
	unsigned long x = 1;
	while (!stop) {
		x = handle_request(x) + 1;
		x = nocfi_call(x);
	}
	sink = x;
}

NI long nap_inner(long n)
{
	struct timespec ts = {0, 2000000}; /* 2 ms */
	nanosleep(&ts, NULL);
	return n + 1;
}

NI long nap_outer(long n)
{
	long r = nap_inner(n * 3);
	return r - 1;
}

static void *nap_thread(void *arg)
{
	long n = 0;
	while (!stop)
		n = nap_outer(n) & 0xffff;
	sink = (unsigned long)n;
	return arg;
}

static int pipefd[2];

NI long block_inner(long n)
{
	char c;
	long r = read(pipefd[0], &c, 1);
	return r + n;
}

NI long block_outer(long n)
{
	long r = block_inner(n + 2);
	return r * 3;
}

static void *block_thread(void *arg)
{
	sink = (unsigned long)block_outer((long)arg);
	return arg;
}

#define FILLER(n) NI unsigned long filler_##n(unsigned long x) { return x * (n + 3) + sink; }
#define FILL8(h) FILLER(h##0) FILLER(h##1) FILLER(h##2) FILLER(h##3) FILLER(h##4) FILLER(h##5) FILLER(h##6) FILLER(h##7)
FILL8(1) FILL8(2) FILL8(3) FILL8(4) FILL8(5) FILL8(6) FILL8(7) FILL8(8)

static void *stopper(void *arg)
{
	sleep((unsigned)(long)arg);
	stop = 1;
	return NULL;
}

int main(int argc, char **argv)
{
	long secs = argc > 1 ? atol(argv[1]) : 0;
	if (argc > 2) /* never: keeps the fillers referenced */
		sink = filler_10(1) + filler_87(2);
	pthread_t nap, st, blk;
	if (pipe(pipefd))
		return 1;
	pthread_create(&nap, NULL, nap_thread, NULL);
	pthread_create(&blk, NULL, block_thread, NULL);
	if (secs > 0)
		pthread_create(&st, NULL, stopper, (void *)secs);
	printf("noframe: pid %d\n", getpid());
	fflush(stdout);
	serve();
	pthread_join(nap, NULL);
	return 0;
}
