#include "cli/endpoint.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <system_error>
#include <vector>

#include "cli/inherited_fds.h"
#include "cli/socket_listener.h"
#include "cli/stop_signals.h"
#include "qcow/format/errors.h"
#include "qcow/io/disk_lock.h"
#include "qcow/io/file_io.h"
#include "qcow/io/wait_io.h"

namespace qcowfs {
namespace {

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// Returns the rest of spec after "scheme:" or "scheme://", or nullopt.
std::optional<std::string> After(const std::string& spec, const std::string& scheme) {
  if (StartsWith(spec, scheme + "://")) return spec.substr(scheme.size() + 3);
  if (StartsWith(spec, scheme + ":")) return spec.substr(scheme.size() + 1);
  return std::nullopt;
}

int ParseFd(const std::string& text, const std::string& spec) {
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end || errno || v < 0 || v > 1 << 20) {
    throw qcow::UsageError("'" + spec + "' does not name a file descriptor number");
  }
  return RequireInherited(static_cast<int>(v), spec);
}

// Accepts one connection on the listening socket s, waiting for it together with the stop
// descriptor: a stop signal ends the wait at once (closing s). Returns accept4's result.
int AcceptWaiting(int s, const std::string& spec) {
  for (;;) {
    if (qcow::WaitReady(s, POLLIN, StopFd()) < 0 && errno == ECANCELED) {
      ::close(s);
      throw qcow::Interrupted("while waiting for a connection on " + spec);
    }
    const int c = ::accept4(s, nullptr, nullptr, SOCK_CLOEXEC);
    if (c >= 0 || errno != EINTR) return c;
  }
}

// Locks the disk open on fd for writing (DiskUse::kWrite), says on stderr when the lock
// cannot be taken, and returns the files the lock holds open beside fd.
std::vector<qcow::UniqueFd> LockForWriting(int fd, const std::string& name) {
  qcow::DiskLock lock = qcow::LockDisk(fd, name, qcow::DiskUse::kWrite);
  if (lock.warning) std::fprintf(stderr, "qcowfs: warning: %s\n", lock.warning->c_str());
  return std::move(lock.held);
}

// Splits "HOST:PORT" (HOST may be [v6]).
std::pair<std::string, std::string> HostPort(const std::string& text, const std::string& spec) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    throw qcow::UsageError("'" + spec + "' needs HOST:PORT");
  }
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return {host, text.substr(colon + 1)};
}

struct Address {
  sockaddr_storage addr{};
  socklen_t len = 0;
};

// Returns the addresses HOST and PORT name.
std::vector<Address> Resolve(const std::string& host, const std::string& port, bool passive,
                             const std::string& spec) {
  std::vector<Address> out;
#ifdef QCOWFS_STATIC
  // A static glibc cannot load the NSS modules that name lookup needs: numeric addresses only.
  (void)passive;
  char* end = nullptr;
  errno = 0;
  const unsigned long n = std::strtoul(port.c_str(), &end, 10);
  if (port.empty() || *end || errno || n > 65535) {
    throw qcow::UsageError("'" + spec +
                           "': the port must be a number (this static build of "
                           "qcowfs looks up no service names)");
  }
  Address a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.addr);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(n));
    a.len = sizeof *v4;
  } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(n));
    a.len = sizeof *v6;
  } else {
    throw qcow::UsageError("'" + spec + "': this static build of qcowfs looks up no host " +
                           "names; give the host as a numeric address (such as 127.0.0.1 or " +
                           "[::1])");
  }
  out.push_back(a);
#else
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res)) {
    throw std::runtime_error("cannot resolve " + spec + ": " + gai_strerror(rc));
  }
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    Address a;
    std::memcpy(&a.addr, ai->ai_addr, ai->ai_addrlen);
    a.len = ai->ai_addrlen;
    out.push_back(a);
  }
  ::freeaddrinfo(res);
#endif
  return out;
}

int Tcp(const std::string& text, const std::string& spec, bool listen_one) {
  auto [host, port] = HostPort(text, spec);
  int err = 0;
  for (const Address& a : Resolve(host, port, listen_one, spec)) {
    const auto* sa = reinterpret_cast<const sockaddr*>(&a.addr);
    int s = ::socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
      err = errno;
      continue;
    }
    if (listen_one) {
      int one = 1;
      ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (::bind(s, sa, a.len) == 0 && ::listen(s, 1) == 0) {
        const int c = AcceptWaiting(s, spec);
        err = errno;
        ::close(s);
        if (c < 0) throw std::system_error(err, std::generic_category(), "accepting on " + spec);
        return c;
      }
    } else if (::connect(s, sa, a.len) == 0) {
      return s;
    }
    err = errno;
    ::close(s);
  }
  throw std::system_error(err, std::generic_category(),
                          (listen_one ? "listening on " : "connecting to ") + spec);
}

int Unix(const std::string& path, const std::string& spec, bool listen_one) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    throw qcow::UsageError("'" + spec + "' is not a usable socket path");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) qcow::ThrowErrno("socket for " + spec);
  auto* sa = reinterpret_cast<sockaddr*>(&addr);
  if (!listen_one) {
    if (::connect(s, sa, sizeof addr) != 0) {
      int err = errno;
      ::close(s);
      throw std::system_error(err, std::generic_category(), "connecting to " + spec);
    }
    return s;
  }
  // A socket left by an earlier run is replaced; anything else at PATH is a typo's victim,
  // and a socket another process listens on is that process's.
  struct stat old;
  if (::lstat(path.c_str(), &old) == 0) {
    if (!S_ISSOCK(old.st_mode)) {
      ::close(s);
      throw qcow::UsageError("'" + spec + "': " + path +
                             " exists and is not a socket; refusing to replace it");
    }
    if (SocketListened(path, old)) {
      ::close(s);
      throw std::runtime_error("'" + spec + "': " + path +
                               " is a socket another process listens on; refusing to take it "
                               "over");
    }
    ::unlink(path.c_str());
  }
  // The socket admits only its owner, whatever the caller's umask: whoever connects first
  // sends the image that serve writes onto the target. (Set around bind, which creates the
  // file with the umask's mode; no other thread creates files meanwhile.)
  const mode_t umask_before = ::umask(0177);
  const bool bound_ok = ::bind(s, sa, sizeof addr) == 0;
  ::umask(umask_before);
  struct stat bound;
  if (!bound_ok || ::listen(s, 1) != 0 || ::lstat(path.c_str(), &bound) != 0) {
    int err = errno;
    ::close(s);
    throw std::system_error(err, std::generic_category(), "listening on " + spec);
  }
  const int c = AcceptWaiting(s, spec);
  int err = errno;
  ::close(s);
  // Only our own socket goes: something put at PATH meanwhile stays.
  struct stat now;
  if (::lstat(path.c_str(), &now) == 0 && now.st_dev == bound.st_dev &&
      now.st_ino == bound.st_ino) {
    ::unlink(path.c_str());
  }
  if (c < 0) throw std::system_error(err, std::generic_category(), "accepting on " + spec);
  return c;
}

}  // namespace

Endpoint::~Endpoint() {
  if (owned_ && fd_ >= 0) ::close(fd_);
}

Endpoint::Endpoint(Endpoint&& o) noexcept
    : fd_(o.fd_),
      owned_(o.owned_),
      description_(std::move(o.description_)),
      held_(std::move(o.held_)) {
  o.fd_ = -1;
}

std::vector<qcow::UniqueFd> LockPassedFile(int fd, const std::string& name) {
  struct stat st;
  if (::fstat(fd, &st) != 0) qcow::ThrowErrno("stat " + name);
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) return {};
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  std::string shown = name;
  char target[PATH_MAX];
  const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
  if (n > 0) shown += " (" + std::string(target, static_cast<size_t>(n)) + ")";
  qcow::UniqueFd own(::open(link.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY));
  struct stat again;
  if (own.get() < 0 || ::fstat(own.get(), &again) != 0 || again.st_dev != st.st_dev ||
      again.st_ino != st.st_ino) {
    const int err = own.get() < 0 ? errno : ESTALE;
    // A file that takes one writer at a time (a qcowfs mount's import.qcow2) has one: the
    // caller's descriptor.
    if (err == EBUSY) return {};
    std::fprintf(stderr,
                 "qcowfs: warning: %s cannot be locked: reopening it through %s failed (%s%s); "
                 "going on without a lock, so another process using it at the same time is not "
                 "refused\n",
                 shown.c_str(), link.c_str(), std::strerror(err),
                 err == ENOENT ? ": is /proc mounted?" : "");
    return {};
  }
  std::vector<qcow::UniqueFd> held = LockForWriting(own.get(), shown);
  held.push_back(std::move(own));
  return held;
}

std::string FilePath(const std::string& spec) {
  if (StartsWith(spec, "file://")) return spec.substr(7);
  if (spec.find("://") != std::string::npos || StartsWith(spec, "tcp:") ||
      StartsWith(spec, "unix:") || StartsWith(spec, "fd:") || StartsWith(spec, "null:")) {
    throw qcow::UsageError("'" + spec + "' is not a file path (file:///PATH or a plain path)");
  }
  if (spec.empty()) throw qcow::UsageError("an empty path was given");
  return spec;
}

Endpoint OpenDestination(const std::string& spec, const VetFn& vet) {
  // Returns `e` once `vet` accepted the file open on it.
  auto vetted = [&](Endpoint e) {
    struct stat st;
    if (::fstat(e.fd(), &st) != 0) qcow::ThrowErrno("stat " + e.description());
    if (vet) vet(st);
    e.Hold(LockPassedFile(e.fd(), e.description()));
    return e;
  };
  if (spec == "-" || spec == "stdout:") return vetted(Endpoint(STDOUT_FILENO, false, "stdout"));
  if (auto fd = After(spec, "fd")) return vetted(Endpoint(ParseFd(*fd, spec), false, spec));
  if (auto t = After(spec, "tcp")) return Endpoint(Tcp(*t, spec, false), true, spec);
  if (auto u = After(spec, "unix")) return Endpoint(Unix(*u, spec, false), true, spec);
  if (spec == "null:") {
    int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd < 0) qcow::ThrowErrno("opening /dev/null");
    return Endpoint(fd, true, spec);
  }
  const std::string path = FilePath(spec);
  auto refuse_kind = [&](const struct stat& st) {
    if (S_ISDIR(st.st_mode) || S_ISBLK(st.st_mode)) {
      throw qcow::UsageError("destination " + path + " is a " +
                             (S_ISDIR(st.st_mode) ? "directory" : "block device") +
                             "; stream writes an image file (a regular file, a FIFO, a "
                             "character device or a socket)");
    }
  };
  struct stat before;
  if (::stat(path.c_str(), &before) == 0) refuse_kind(before);
  // No O_TRUNC: a file is emptied only once it is known not to be one that is read.
  Endpoint out(qcow::OpenUnplanted(path, O_WRONLY | O_CREAT, 0644, "destination"), true, path);
  if (out.fd() < 0) qcow::ThrowErrno("opening destination " + path);
  struct stat st;
  if (::fstat(out.fd(), &st) != 0) qcow::ThrowErrno("stat " + path);
  refuse_kind(st);
  if (vet) vet(st);
  if (S_ISREG(st.st_mode)) {
    // Another process's import or export of the file keeps it as it is.
    out.Hold(LockForWriting(out.fd(), "destination " + path));
    if (::ftruncate(out.fd(), 0) != 0) qcow::ThrowErrno("truncating destination " + path);
  }
  return out;
}

void RefuseDirectorySource(const struct stat& st, const std::string& name) {
  if (!S_ISDIR(st.st_mode)) return;
  throw qcow::UsageError("the image source " + name +
                         " is a directory; serve reads an image from a regular file, a block "
                         "device, a FIFO, a socket or a character device");
}

Endpoint OpenImageSource(const std::string& spec) {
  // Returns `e` unless it is open on a directory.
  auto checked = [](Endpoint e) {
    struct stat st;
    if (::fstat(e.fd(), &st) == 0) RefuseDirectorySource(st, e.description());
    return e;
  };
  if (spec == "-" || spec == "stdin:") return checked(Endpoint(STDIN_FILENO, false, "stdin"));
  if (auto fd = After(spec, "fd")) return checked(Endpoint(ParseFd(*fd, spec), false, spec));
  if (auto t = After(spec, "tcp")) return Endpoint(Tcp(*t, spec, true), true, spec);
  if (auto u = After(spec, "unix")) return Endpoint(Unix(*u, spec, true), true, spec);
  const std::string path = FilePath(spec);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) qcow::ThrowErrno("opening source " + path);
  return checked(Endpoint(fd, true, path));
}

std::optional<struct stat> StatEndpoint(const std::string& spec, bool destination) {
  struct stat st;
  if (spec == "-" || spec == (destination ? "stdout:" : "stdin:")) {
    const int fd = destination ? STDOUT_FILENO : STDIN_FILENO;
    if (::fstat(fd, &st) != 0) qcow::ThrowErrno(destination ? "stat stdout" : "stat stdin");
    return st;
  }
  if (auto fd = After(spec, "fd")) {
    if (::fstat(ParseFd(*fd, spec), &st) != 0) qcow::ThrowErrno("stat " + spec);
    return st;
  }
  if (After(spec, "tcp") || After(spec, "unix") || spec == "null:") return std::nullopt;
  if (::stat(FilePath(spec).c_str(), &st) != 0) return std::nullopt;
  return st;
}

}  // namespace qcowfs
