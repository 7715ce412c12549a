// Where stream writes to and where serve reads from, as xapi and admins name them.
#pragma once

#include <sys/stat.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "qcow/io/unique_fd.h"

namespace qcowfs {

// An open descriptor and a short description for messages. Closes it when owned.
class Endpoint {
 public:
  Endpoint(int fd, bool owned, std::string description)
      : fd_(fd), owned_(owned), description_(std::move(description)) {}
  ~Endpoint();
  Endpoint(Endpoint&& other) noexcept;
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;
  int fd() const { return fd_; }
  // Stops owning the descriptor, which the caller then closes (or not), and returns it.
  int Release() {
    owned_ = false;
    return fd_;
  }
  const std::string& description() const { return description_; }
  // Keeps `held` (descriptors that carry the lock on the file written) open as long as this.
  void Hold(std::vector<qcow::UniqueFd> held) { held_ = std::move(held); }

 private:
  int fd_;
  bool owned_;
  std::string description_;
  std::vector<qcow::UniqueFd> held_;
};

// Called with the stat of a file about to be written, before anything is; throws to refuse
// it (the file is one that is read).
using VetFn = std::function<void(const struct stat&)>;

// Opens a stream destination: "-" or "stdout:", "fd:N" or "fd://N", "tcp:HOST:PORT" or
// "tcp://HOST:PORT" (connects), "unix:PATH" or "unix://PATH" (connects), "null:",
// "file:///PATH" or a plain path (created, or truncated once `vet` accepted it and it is
// locked). `vet` sees stdout's, the descriptor's or the path's file. A regular file or a
// block device is locked for writing (qcow::DiskUse::kWrite; a descriptor through
// LockPassedFile) before anything is written, for as long as the Endpoint lives. Throws
// UsageError for a spec it does not understand or a path that is a directory or a block
// device, what `vet` throws, qcow::DiskInUse when another process uses the file, and
// std::system_error when it cannot open it.
Endpoint OpenDestination(const std::string& spec, const VetFn& vet = {});

// Locks for writing (qcow::DiskUse::kWrite) the regular file or block device the caller's
// descriptor fd is open on, through an open file of qcowfs's own (/proc/self/fd/N reopened
// for writing, not truncated): a lock on the caller's open file would outlive qcowfs while
// the caller keeps it open. `name` names the descriptor ("stdout", "fd:3"). Returns what
// holds the lock (nothing for other files). Warns on stderr and goes on without a lock when
// the file cannot be reopened (no /proc) or its file system takes no locks; goes on quietly
// when reopening gives EBUSY (a file that admits one writer, the caller's). Throws
// qcow::DiskInUse when another process uses the file.
std::vector<qcow::UniqueFd> LockPassedFile(int fd, const std::string& name);

// Opens a serve source: "-" or "stdin:", "fd:N" or "fd://N", "tcp:HOST:PORT" or
// "tcp://HOST:PORT" (listens and accepts one connection), "unix:PATH" or "unix://PATH"
// (listens and accepts one; a stale socket left at PATH is replaced, one another process
// listens on is refused with std::runtime_error, anything else there with UsageError),
// "file:///PATH" or a plain path (read).
Endpoint OpenImageSource(const std::string& spec);

// Throws UsageError when st, the file of the serve source `name`, is a directory: an image
// is read from a regular file, a block device, a FIFO, a socket or a character device.
void RefuseDirectorySource(const struct stat& st, const std::string& name);

// Returns the stat of the file a destination (`destination`) or serve source names (stdout
// or stdin, the descriptor, the path) without opening, connecting or accepting anything;
// nullopt for sockets and null: and for a path that does not exist (yet).
std::optional<struct stat> StatEndpoint(const std::string& spec, bool destination);

// Returns the path of "file:///PATH" or a plain path; throws UsageError for other schemes.
std::string FilePath(const std::string& spec);

}  // namespace qcowfs
