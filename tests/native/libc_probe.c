/* libc_probe.c - a C program whose libc calls tether trace must see.
 *
 *   libc_probe net          TCP and UDP on loopback, getaddrinfo of localhost
 *   libc_probe files DIR    files in DIR (left empty again)
 *   libc_probe threads N S  N threads doing mixed calls for S seconds
 *   libc_probe reads N      N 1-byte reads from /dev/zero, timed: ns per read
 *   libc_probe spawn        fork + execlp (PATH search), execle, execv, posix_spawnp
 *   libc_probe dupover DIR  dup2 onto descriptors 700-763, then a file made and removed in DIR
 *   libc_probe vfork        close(-101), vfork: the child close(-102) and execs true; close(-103)
 *   libc_probe rawsys A P   through syscall() only: HTTP/1.0 GET from IPv4 A:P, then io_uring_setup
 *
 * Prints the same lines with or without tether; exits 1 on any failure. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "%s: %s\n", what, strerror(errno));
		exit(1);
	}
}

static int net(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)}, peer;
	socklen_t len = sizeof a;
	char buf[16] = {0};
	int srv = socket(AF_INET, SOCK_STREAM, 0), cli, conn, udp;

	check(srv >= 0, "socket");
	check(bind(srv, (struct sockaddr *)&a, sizeof a) == 0, "bind");
	check(listen(srv, 4) == 0, "listen");
	check(getsockname(srv, (struct sockaddr *)&a, &len) == 0, "getsockname");
	cli = socket(AF_INET, SOCK_STREAM, 0);
	check(connect(cli, (struct sockaddr *)&a, sizeof a) == 0, "connect");
	len = sizeof peer;
	conn = accept4(srv, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
	check(conn >= 0, "accept4");
	check(send(cli, "ping", 4, 0) == 4, "send");
	check(recv(conn, buf, sizeof buf, 0) == 4, "recv");
	len = sizeof peer;
	check(getpeername(cli, (struct sockaddr *)&peer, &len) == 0 && peer.sin_port == a.sin_port, "getpeername");
	check(shutdown(cli, SHUT_WR) == 0, "shutdown");
	check(read(conn, buf + 4, 4) == 0, "read at end");
	printf("tcp %s\n", buf);
	close(conn);
	close(cli);
	close(srv);

	udp = socket(AF_INET, SOCK_DGRAM, 0);
	len = sizeof a;
	a.sin_port = 0;
	check(bind(udp, (struct sockaddr *)&a, sizeof a) == 0, "bind udp");
	check(getsockname(udp, (struct sockaddr *)&a, &len) == 0, "getsockname udp");
	check(sendto(udp, "pong", 4, 0, (struct sockaddr *)&a, sizeof a) == 4, "sendto");
	memset(buf, 0, sizeof buf);
	len = sizeof peer;
	check(recvfrom(udp, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len) == 4, "recvfrom");
	printf("udp %s\n", buf);
	close(udp);

	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
	char host[INET_ADDRSTRLEN];

	check(getaddrinfo("localhost", "80", &hints, &res) == 0, "getaddrinfo");
	inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, host, sizeof host);
	printf("lookup localhost %s:%d\n", host, ntohs(((struct sockaddr_in *)res->ai_addr)->sin_port));
	freeaddrinfo(res);
	return 0;
}

static int files(const char *dir)
{
	char path[4096], moved[4096], sub[4096], buf[32] = {0};
	struct stat st;
	struct iovec iov[2] = {{"ab", 2}, {"cd", 2}};
	int fd, copy, n = 0;
	FILE *f;
	DIR *d;
	struct dirent *e;

	snprintf(path, sizeof path, "%s/probe.txt", dir);
	snprintf(moved, sizeof moved, "%s/moved.txt", dir);
	snprintf(sub, sizeof sub, "%s/sub", dir);
	fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
	check(fd >= 0, "open");
	check(writev(fd, iov, 2) == 4 && pwrite(fd, "XY", 2, 4) == 2 && write(fd, "!", 1) == 1, "write");
	copy = dup(fd);
	check(copy > fd && fcntl(copy, F_GETFD) == 0 && dup2(copy, copy + 1) == copy + 1, "dup");
	close(copy + 1);
	close(copy);
	close(fd);
	check(stat(path, &st) == 0 && st.st_size == 6 && lstat(path, &st) == 0, "stat");
	check(access(path, R_OK) == 0, "access");
	fd = open(path, O_RDONLY);
	check(fd >= 0 && fstat(fd, &st) == 0 && pread(fd, buf, 3, 2) == 3 && read(fd, buf + 3, 4) == 4, "read");
	close(fd);
	printf("file %s %ld\n", buf, (long)st.st_size);
	f = fopen(path, "a+");
	check(f != NULL, "fopen");
	fprintf(f, "%s", "more");
	f = freopen(path, "r", f);
	check(f != NULL && fgets(buf, sizeof buf, f) && !strcmp(buf, "abcd!Ymore"), "freopen");
	fclose(f);
	check(rename(path, moved) == 0 && mkdir(sub, 0700) == 0, "rename");
	d = opendir(dir);
	check(d != NULL, "opendir");
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	printf("entries %d\n", n);
	check(stat(path, &st) == -1 && errno == ENOENT, "stat of a moved file");
	check(unlink(moved) == 0 && rmdir(sub) == 0, "unlink");
	printf("files ok\n");
	return 0;
}

static double seconds;

static void *worker(void *arg)
{
	struct timespec start, now;
	long rounds = 0;
	char path[64], buf[8];

	snprintf(path, sizeof path, "/proc/self/task/%ld/stat", (long)arg);
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		int sv[2], fd, copy;
		struct stat st;

		check(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
		check(write(sv[0], "x", 1) == 1 && read(sv[1], buf, 1) == 1, "pair");
		close(sv[0]);
		close(sv[1]);
		fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		check(fd >= 0 && fstat(fd, &st) == 0 && (copy = dup(fd)) >= 0, "devnull");
		close(copy);
		close(fd);
		check(stat("/", &st) == 0, "stat /");
		rounds++;
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while (now.tv_sec - start.tv_sec + (now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
	return (void *)rounds;
}

static int threads(int n, double s)
{
	pthread_t t[64];
	long total = 0;

	seconds = s;
	check(n > 0 && n <= 64, "thread count");
	for (long i = 0; i < n; i++)
		check(pthread_create(&t[i], NULL, worker, (void *)i) == 0, "pthread_create");
	for (int i = 0; i < n; i++) {
		void *rounds;

		pthread_join(t[i], &rounds);
		total += (long)rounds;
	}
	fprintf(stderr, "rounds %ld\n", total);
	printf("threads %d ok\n", n);
	return total > 0 ? 0 : 1;
}

static int reads(long n)
{
	struct timespec start, end;
	char c;
	int fd = open("/dev/zero", O_RDONLY);

	check(fd >= 0, "open /dev/zero");
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (long i = 0; i < n; i++)
		if (read(fd, &c, 1) != 1)
			check(0, "read");
	clock_gettime(CLOCK_MONOTONIC, &end);
	printf("%.1f ns/op\n", ((end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec)) / n);
	return 0;
}

/* Programs that make socket calls by number (and libuv's io_uring_setup) reach the kernel
 * through libc's syscall(), not its wrappers. */
static int rawsys(const char *host, int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	static const char get[] = "GET / HTTP/1.0\r\n\r\n";
	char buf[64] = {0}, *eol;
	long fd, r;
	unsigned char params[120] = {0}; /* struct io_uring_params */

	check(inet_pton(AF_INET, host, &a.sin_addr) == 1, "inet_pton");
	fd = syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
	check(fd >= 0, "socket");
	if (syscall(SYS_connect, fd, &a, sizeof a) < 0) {
		printf("connect error: %s\n", strerror(errno));
	} else {
		check(syscall(SYS_write, fd, get, sizeof get - 1) == sizeof get - 1, "write");
		check(syscall(SYS_read, fd, buf, sizeof buf - 1) > 0, "read");
		if ((eol = strstr(buf, "\r\n")))
			*eol = '\0';
		printf("connect ok: %s\n", buf);
	}
	syscall(SYS_close, fd);
	r = syscall(SYS_io_uring_setup, 4, params);
	if (r >= 0) {
		printf("io_uring ok\n");
		close((int)r);
	} else {
		printf("io_uring error: %s\n", strerror(errno));
	}
	return 0;
}

static int wait_for(pid_t pid)
{
	int status;

	check(pid > 0 && waitpid(pid, &status, 0) == pid, "waitpid");
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int spawn(void)
{
	pid_t pid = fork();

	if (pid == 0) {
		execlp("echo", "echo", "from-child", (char *)NULL);
		_exit(127);
	}
	printf("echo exited %d\n", wait_for(pid));
	pid = fork();
	if (pid == 0) {
		char *const env[] = {"CODE=7", NULL};

		execle("/bin/sh", "sh", "-c", "exit $CODE", (char *)NULL, env);
		_exit(127);
	}
	printf("sh exited %d\n", wait_for(pid));
	pid = fork();
	if (pid == 0) {
		char *const argv[] = {"sh", "-c", "exit 9", NULL};

		execv("/bin/sh", argv);
		_exit(127);
	}
	printf("sh exited %d\n", wait_for(pid));
	{
		char *const argv[] = {"sh", "-c", "exit 5", NULL}, *const env[] = {"ONLY=this", NULL};

		check(posix_spawnp(&pid, "sh", NULL, NULL, argv, env) == 0, "posix_spawnp");
		printf("spawned sh exited %d\n", wait_for(pid));
	}
	check(execlp("no-such-program-here", "x", (char *)NULL) == -1 && errno == ENOENT, "execlp of nothing");
	return 0;
}

/* The vfork child runs in the parent's memory, with the TLS of the thread that called vfork;
 * the three closes (EBADF) tell in the trace who made them. */
static int vforked(void)
{
	pid_t pid;

	close(-101);
	pid = vfork();
	if (pid == 0) {
		close(-102);
		execl("/bin/true", "true", (char *)NULL);
		_exit(127);
	}
	check(pid > 0, "vfork");
	close(-103);
	printf("vfork child exited %d\n", wait_for(pid));
	return 0;
}

/* Numbers a program may pick for its own reasons, tether's among them. */
static int dupover(const char *dir)
{
	char path[4096];
	int fd = open("/dev/null", O_RDONLY);

	check(fd >= 0, "open /dev/null");
	for (int n = 700; n < 764; n++)
		check(dup2(fd, n) == n, "dup2");
	for (int n = 700; n < 764; n++)
		close(n);
	snprintf(path, sizeof path, "%s/after-dup2", dir);
	check(close(open(path, O_CREAT | O_WRONLY, 0600)) == 0 && unlink(path) == 0, "file after dup2");
	printf("dupover ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 2 && !strcmp(argv[1], "net"))
		return net();
	if (argc == 3 && !strcmp(argv[1], "files"))
		return files(argv[2]);
	if (argc == 4 && !strcmp(argv[1], "threads"))
		return threads(atoi(argv[2]), atof(argv[3]));
	if (argc == 3 && !strcmp(argv[1], "dupover"))
		return dupover(argv[2]);
	if (argc == 2 && !strcmp(argv[1], "spawn"))
		return spawn();
	if (argc == 3 && !strcmp(argv[1], "reads"))
		return reads(atol(argv[2]));
	if (argc == 4 && !strcmp(argv[1], "rawsys"))
		return rawsys(argv[2], atoi(argv[3]));
	if (argc == 2 && !strcmp(argv[1], "vfork"))
		return vforked();
	fprintf(stderr, "usage: libc_probe net | files DIR | threads N SECONDS | reads N | spawn | vfork\n");
	return 2;
}
