/* The network policy guest (dualstack run --net): tries each kind of network call once and
   prints one line per try, "NAME: ok" or "NAME: ERRNO-NAME". Every try uses fresh sockets. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void report(const char *name, int rc) {
    printf("%s: %s\n", name, rc < 0 ? strerrorname_np(errno) : "ok");
}

static struct sockaddr_in v4(const char *ip, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static int udp(void) { return socket(AF_INET, SOCK_DGRAM, 0); }

int main(void) {
    int s = udp();
    report("socket inet", s);
    if (s >= 0) close(s);

    s = udp();
    if (s >= 0) {
        struct sockaddr_in lo = v4("127.0.0.1", 0);
        report("bind loopback", bind(s, (void *)&lo, sizeof lo));
        socklen_t len = sizeof lo;
        getsockname(s, (void *)&lo, &len);
        report("sendto loopback", (int)sendto(s, "x", 1, 0, (void *)&lo, sizeof lo));
        char c = 0;
        report("recv loopback", (int)recv(s, &c, 1, MSG_DONTWAIT));
        close(s);
    }

    s = udp();
    if (s >= 0) {
        struct sockaddr_in any = v4("0.0.0.0", 0);
        report("bind any", bind(s, (void *)&any, sizeof any));
        close(s);
    }

    s = udp();
    if (s >= 0) {
        struct sockaddr_in far = v4("192.0.2.1", 9);
        struct msghdr m = {0};
        struct iovec iov = {.iov_base = "y", .iov_len = 1};
        m.msg_name = &far;
        m.msg_namelen = sizeof far;
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        report("sendmsg far", (int)sendmsg(s, &m, MSG_DONTWAIT));
        close(s);
    }

    s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s >= 0) {
        struct sockaddr_in far = v4("192.0.2.1", 9);
        int rc = connect(s, (void *)&far, sizeof far);
        /* A connect in progress is as good as done here. */
        report("connect far", rc < 0 && errno == EINPROGRESS ? 0 : rc);
        close(s);
    }

    s = socket(AF_INET6, SOCK_DGRAM, 0);
    report("socket inet6", s);
    if (s >= 0) {
        struct sockaddr_in6 lo6 = {.sin6_family = AF_INET6, .sin6_port = htons(9)};
        lo6.sin6_addr = in6addr_loopback;
        report("connect loopback6", connect(s, (void *)&lo6, sizeof lo6));
        close(s);
    }

    int sv[2];
    report("socketpair unix", socketpair(AF_UNIX, SOCK_STREAM, 0, sv));

    int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    report("socket netlink", nl);
    if (nl >= 0) {
        struct {
            struct nlmsghdr h;
            struct ifinfomsg i;
        } req = {0};
        req.h.nlmsg_len = sizeof req;
        req.h.nlmsg_type = RTM_GETLINK;
        req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
        struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
        report("netlink dump", (int)sendto(nl, &req, sizeof req, 0, (void *)&kernel, sizeof kernel));
        req.h.nlmsg_type = RTM_NEWLINK;
        req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
        report("netlink change", (int)sendto(nl, &req, sizeof req, 0, (void *)&kernel, sizeof kernel));
        close(nl);
    }
    return 0;
}
