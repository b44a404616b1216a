/* The spawn ceiling of this machine: how many times a second one small process can
 * fork + exec + wait for /bin/true, one at a time and with two in flight (issue 17 compares
 * Shoal's end-to-end rate with the second). bench/scheduling.py compiles and runs it.
 * Usage: spawn_ceiling N  -> prints {"sequential_per_s": .., "two_in_flight_per_s": ..} */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void start(void) {
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/true", "true", (char *)0);
        _exit(127);
    }
    if (pid < 0) { perror("fork"); exit(1); }
}

static void reap(void) {
    int status;
    if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "a child failed\n");
        exit(1);
    }
}

static double run(int n, int in_flight) {
    double t0 = now();
    int started = 0, live = 0;
    while (started < n || live > 0) {
        while (started < n && live < in_flight) { start(); started++; live++; }
        reap(); live--;
    }
    return n / (now() - t0);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    double seq = run(n, 1), two = run(n, 2);
    printf("{\"spawns\": %d, \"sequential_per_s\": %.0f, \"two_in_flight_per_s\": %.0f}\n", n, seq, two);
    return 0;
}
