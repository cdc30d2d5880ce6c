/* exectty.c: see exectty.h. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "client/exectty.h"
#include "common/util.h"

static struct {
	int master;             /* ours */
	int slave;              /* the command's side; ours closed at stop */
	struct termios saved;
	bool raw;
	pthread_t relay;
	bool running;
} t = { .master = -1, .slave = -1 };

bool exectty_wanted(void)
{
	return isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
}

void exectty_winch(void)
{
	struct winsize ws;
	if (t.master >= 0 && ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0)
		ioctl(t.master, TIOCSWINSZ, &ws);
}

/* Copy what one fd has to another; false at its end. */
static bool pump(int from, int to)
{
	char buf[4096];
	ssize_t n = read(from, buf, sizeof(buf));
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	if (n <= 0)
		return false;   /* EIO on the master: every slave fd is closed */
	/* A closed output (EPIPE) does not stop the draining of the other side. */
	(void)write_all(to, buf, (size_t)n);
	return true;
}

static void *relay(void *arg)
{
	(void)arg;
	bool in_open = true;
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = t.master, .events = POLLIN },
			{ .fd = in_open ? STDIN_FILENO : -1, .events = POLLIN },
		};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) && !pump(t.master, STDOUT_FILENO))
			break;
		if ((p[1].revents & (POLLIN | POLLHUP)) && !pump(STDIN_FILENO, t.master))
			in_open = false;
	}
	return NULL;
}

static int open_pair(alps_error **err)
{
	t.master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (t.master < 0 || grantpt(t.master) < 0 || unlockpt(t.master) < 0)
		return alps_fail_errno(err, "cannot make a pseudo-terminal");
	char name[128];
	if (ptsname_r(t.master, name, sizeof(name)) != 0)
		return alps_fail_errno(err, "ptsname");
	t.slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (t.slave < 0)
		return alps_fail_errno(err, "open(%s)", name);
	return 0;
}

int exectty_start(int *slave, alps_error **err)
{
	if (open_pair(err) < 0) {
		exectty_stop();
		return -1;
	}
	exectty_winch();
	if (tcgetattr(STDIN_FILENO, &t.saved) == 0) {
		struct termios raw = t.saved;
		cfmakeraw(&raw);
		t.raw = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
	}
	int rc = pthread_create(&t.relay, NULL, relay, NULL);
	if (rc != 0) {
		exectty_stop();
		return alps_fail_errnum(err, rc, "cannot start the terminal relay");
	}
	t.running = true;
	*slave = t.slave;
	return 0;
}

void exectty_stop(void)
{
	if (t.slave >= 0)
		close(t.slave);
	t.slave = -1;
	if (t.running)
		pthread_join(t.relay, NULL);
	t.running = false;
	if (t.master >= 0)
		close(t.master);
	t.master = -1;
	if (t.raw)
		tcsetattr(STDIN_FILENO, TCSANOW, &t.saved);
	t.raw = false;
}
