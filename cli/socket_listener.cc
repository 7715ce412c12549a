#include "cli/socket_listener.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>

#include "qcow/io/unique_fd.h"

namespace qcowfs {
namespace {

// Returns whether the device number a sock_diag reply gives is st_dev: as stat(2) encodes
// it, or as the kernel keeps it (major << 20 | minor).
bool SameDevice(uint32_t reported, dev_t st_dev) {
  return reported == static_cast<uint32_t>(st_dev) ||
         reported == ((major(st_dev) << 20) | minor(st_dev));
}

// Returns whether the kernel's table of listening unix sockets in this network namespace
// holds one bound to the file st; nullopt when the table cannot be read.
std::optional<bool> ListedAsListening(const struct stat& st) {
  qcow::UniqueFd nl(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (nl.get() < 0) return std::nullopt;
  struct {
    nlmsghdr header;
    unix_diag_req request;
  } query{};
  query.header.nlmsg_len = sizeof query;
  query.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  query.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  query.request.sdiag_family = AF_UNIX;
  query.request.udiag_states = 1u << TCP_LISTEN;  // a listening unix socket's state
  query.request.udiag_show = UDIAG_SHOW_VFS;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(nl.get(), &query, sizeof query, 0, reinterpret_cast<sockaddr*>(&kernel),
               sizeof kernel) != static_cast<ssize_t>(sizeof query)) {
    return std::nullopt;
  }
  bool found = false;
  alignas(nlmsghdr) char buf[32768];
  for (;;) {
    const ssize_t n = ::recv(nl.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    int left = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) return found;
      if (h->nlmsg_type == NLMSG_ERROR) return std::nullopt;
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
          h->nlmsg_len < NLMSG_LENGTH(sizeof(unix_diag_msg)))
        continue;
      const auto* msg = static_cast<const unix_diag_msg*>(NLMSG_DATA(h));
      int attrs = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *msg));
      for (auto* a = reinterpret_cast<rtattr*>(const_cast<unix_diag_msg*>(msg + 1));
           RTA_OK(a, attrs); a = RTA_NEXT(a, attrs)) {
        if (a->rta_type != UNIX_DIAG_VFS || RTA_PAYLOAD(a) < sizeof(unix_diag_vfs)) continue;
        unix_diag_vfs vfs;
        std::memcpy(&vfs, RTA_DATA(a), sizeof vfs);
        if (vfs.udiag_vfs_ino == static_cast<uint32_t>(st.st_ino) &&
            SameDevice(vfs.udiag_vfs_dev, st.st_dev)) {
          found = true;
        }
      }
    }
  }
}

// Returns whether a connection to the socket at path is anything but refused.
bool ConnectionNotRefused(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return true;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  // Non-blocking: a listener whose backlog is full answers EAGAIN rather than keep us.
  qcow::UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (s.get() < 0) return true;
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return true;
  return errno != ECONNREFUSED && errno != ENOENT;
}

}  // namespace

bool SocketListened(const std::string& path, const struct stat& st) {
  if (ListedAsListening(st).value_or(false)) return true;
  return ConnectionNotRefused(path);
}

}  // namespace qcowfs
