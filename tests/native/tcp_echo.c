/* tcp_echo: a TCP echo server in plain C (blocking accept(), one client at a time), for
 * tether exec --incoming.  Usage: tcp_echo PORT.  Prints "listening PORT" once it listens,
 * then for each client "client ADDR:PORT local ADDR:PORT" (getpeername, getsockname) and
 * echoes each line back prefixed "echo "; ends on SIGTERM. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void name(const struct sockaddr_in6 *sa, char *out, size_t n)
{
	char host[INET6_ADDRSTRLEN];

	inet_ntop(AF_INET6, &sa->sin6_addr, host, sizeof host);
	snprintf(out, n, "%s:%u", strncmp(host, "::ffff:", 7) ? host : host + 7, ntohs(sa->sin6_port));
}

int main(int argc, char **argv)
{
	struct sockaddr_in6 addr = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT};
	int one = 1, zero = 0, listener;

	if (argc != 2)
		return 2;
	addr.sin6_port = htons((unsigned short)atoi(argv[1]));
	listener = socket(AF_INET6, SOCK_STREAM, 0);
	setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(listener, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
	if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 16)) {
		perror("listen");
		return 1;
	}
	printf("listening %s\n", argv[1]);
	fflush(stdout);
	for (;;) {
		struct sockaddr_in6 peer, local;
		socklen_t peer_len = sizeof peer, local_len = sizeof local;
		char peer_name[80], local_name[80], line[512];
		int conn = accept(listener, (struct sockaddr *)&peer, &peer_len);
		FILE *in, *out;

		if (conn < 0) {
			perror("accept");
			return 1;
		}
		getsockname(conn, (struct sockaddr *)&local, &local_len);
		name(&peer, peer_name, sizeof peer_name);
		name(&local, local_name, sizeof local_name);
		printf("client %s local %s\n", peer_name, local_name);
		fflush(stdout);
		in = fdopen(conn, "r");
		out = fdopen(dup(conn), "w");
		while (fgets(line, sizeof line, in)) {
			fprintf(out, "echo %s", line);
			fflush(out);
		}
		fclose(in);
		fclose(out);
	}
}
