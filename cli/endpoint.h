// Where stream writes to and where serve reads from, as xapi and admins name them.
#pragma once

#include <sys/stat.h>

#include <functional>
#include <optional>
#include <string>

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

 private:
  int fd_;
  bool owned_;
  std::string description_;
};

// Called with the stat of a file about to be written, before anything is; throws to refuse
// it (the file is one that is read).
using VetFn = std::function<void(const struct stat&)>;

// Opens a stream destination: "-" or "stdout:", "fd:N" or "fd://N", "tcp:HOST:PORT" or
// "tcp://HOST:PORT" (connects), "unix:PATH" or "unix://PATH" (connects), "null:",
// "file:///PATH" or a plain path (created, or truncated once `vet` accepted it). `vet`
// sees stdout's, the descriptor's or the path's file. Throws UsageError for a spec it does
// not understand or a path that is a directory or a block device, what `vet` throws, and
// std::system_error when it cannot open it.
Endpoint OpenDestination(const std::string& spec, const VetFn& vet = {});

// Opens a serve source: "-" or "stdin:", "fd:N" or "fd://N", "tcp:HOST:PORT" or
// "tcp://HOST:PORT" (listens and accepts one connection), "unix:PATH" or "unix://PATH"
// (listens and accepts one; a socket left at PATH is replaced, anything else there is
// refused with UsageError), "file:///PATH" or a plain path (read).
Endpoint OpenImageSource(const std::string& spec);

// Returns the stat of the file a destination (`destination`) or serve source names (stdout
// or stdin, the descriptor, the path) without opening, connecting or accepting anything;
// nullopt for sockets and null: and for a path that does not exist (yet).
std::optional<struct stat> StatEndpoint(const std::string& spec, bool destination);

// Returns the path of "file:///PATH" or a plain path; throws UsageError for other schemes.
std::string FilePath(const std::string& spec);

}  // namespace qcowfs
