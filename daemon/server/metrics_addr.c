/* metrics_addr.c: metrics.listen's address, parsed and checked (see
 * metrics_http.h).  Apart from the listener, so that the settings (which
 * check the address) do not pull the server into every program that
 * reads them, the client among them. */
#include <config.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "common/util.h"
#include "daemon/server/metrics_http.h"

static int listen_error(const char *spec, const char *why, alps_error **err)
{
	return alps_fail(err, ALPS_E_INVALID, "metrics.listen: '%s': %s", spec, why);
}

static int not_loopback(const char *spec, const char *host, alps_error **err)
{
	return alps_fail(err, ALPS_E_INVALID, "metrics.listen: '%s': %s is not %s: the metrics "
			 "listener serves this node only", spec, host, strchr(host, ':') ?
			 "the loopback address [::1]" :
			 "a loopback address (127.0.0.0/8, [::1], or unix:/path)");
}

/* host (an IPv4 address, "localhost" or "[v6]") and port into ss. */
static int inet_address(const char *spec, char *host, uint16_t port,
			struct sockaddr_storage *ss, socklen_t *len, alps_error **err)
{
	struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
	size_t hl = strlen(host);
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host,
		      &v4->sin_addr) == 1) {
		if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127)
			return not_loopback(spec, host, err);
		v4->sin_family = AF_INET;
		v4->sin_port = htons(port);
		*len = sizeof(*v4);
		return 0;
	}
	if (hl > 2 && host[0] == '[' && host[hl - 1] == ']') {
		host[hl - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, &v6->sin6_addr) == 1) {
			if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr))
				return not_loopback(spec, host + 1, err);
			v6->sin6_family = AF_INET6;
			v6->sin6_port = htons(port);
			*len = sizeof(*v6);
			return 0;
		}
		host[hl - 1] = ']';
	}
	return alps_fail(err, ALPS_E_INVALID, "metrics.listen: '%s': '%s' is not an IP address "
			 "(a loopback one: 127.0.0.1, localhost or [::1]; or unix:/path)", spec, host);
}

/* HOST:PORT or [V6]:PORT into ss; a host that is not loopback is refused. */
static int parse_inet(const char *spec, struct sockaddr_storage *ss, socklen_t *len,
		      alps_error **err)
{
	const char *colon = strrchr(spec, ':');
	if (!colon || colon == spec || (spec[0] == '[' && colon[-1] != ']'))
		return listen_error(spec, "expected HOST:PORT with a loopback HOST, or unix:/path",
				    err);
	_cleanup_free_ char *host = xstrndup(spec, (size_t)(colon - spec));
	char *end;
	errno = 0;
	long port = strtol(colon + 1, &end, 10);
	if (errno || end == colon + 1 || *end || port < 1 || port > 65535)
		return listen_error(spec, "the port must be 1 to 65535", err);
	return inet_address(spec, host, (uint16_t)port, ss, len, err);
}

int metrics_listen_parse(const char *spec, struct sockaddr_storage *ss, socklen_t *len,
			 alps_error **err)
{
	if (strncmp(spec, "unix:", 5) != 0)
		return parse_inet(spec, ss, len, err);
	struct sockaddr_un *un = (struct sockaddr_un *)ss;
	const char *path = spec + 5;
	if (path[0] != '/')
		return listen_error(spec, "a Unix socket path must be absolute", err);
	if (strlen(path) >= sizeof(un->sun_path))
		return listen_error(spec, "the Unix socket path is too long", err);
	memset(ss, 0, sizeof(*ss));
	un->sun_family = AF_UNIX;
	strcpy(un->sun_path, path);
	*len = sizeof(*un);
	return 0;
}

int metrics_listen_check(const char *spec, alps_error **err)
{
	struct sockaddr_storage ss;
	socklen_t len;
	return *spec ? metrics_listen_parse(spec, &ss, &len, err) : 0;
}
