/* target.c: the process symbolize's tests name the addresses of.
 * It prints "name address" lines for its own functions, a libc function and
 * an anonymous executable mapping (JIT-like code), then waits until its
 * standard input closes. argv[1], when given, becomes its comm (prctl), so
 * a test can pose as "node". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

static volatile unsigned long sink;

static __attribute__((noinline)) void local_spin(int n) {
	for (int i = 0; i < n; i++)
		sink += i;
}

__attribute__((noinline)) void exported_work(int n) {
	local_spin(n);
	sink ^= 1;
}

int main(int argc, char **argv) {
	if (argc > 1)
		prctl(PR_SET_NAME, argv[1], 0, 0, 0);
	void *jit = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (jit == MAP_FAILED)
		return 1;
	memset(jit, 0xc3, 4096); /* ret */
	exported_work(10);
	printf("local_spin %p\n", (void *)local_spin);
	printf("exported_work %p\n", (void *)exported_work);
	printf("main %p\n", (void *)main);
	printf("malloc %p\n", (void *)malloc);
	printf("jit %p\n", jit);
	fflush(stdout);
	char buf[1];
	while (read(0, buf, 1) > 0)
		;
	return 0;
}
