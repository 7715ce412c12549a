// Where stream writes to and where serve reads from, as xapi and admins name them.
#pragma once

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

// Opens a stream destination: "-" or "stdout:", "fd:N" or "fd://N", "tcp:HOST:PORT" or
// "tcp://HOST:PORT" (connects), "unix:PATH" or "unix://PATH" (connects), "null:",
// "file:///PATH" or a plain path (created or truncated). Throws UsageError for a spec it
// does not understand and std::system_error when it cannot open it.
Endpoint OpenDestination(const std::string& spec);

// Opens a serve source: "-" or "stdin:", "fd:N" or "fd://N", "tcp:HOST:PORT" or
// "tcp://HOST:PORT" (listens and accepts one connection), "unix:PATH" or "unix://PATH"
// (listens and accepts one), "file:///PATH" or a plain path (read).
Endpoint OpenImageSource(const std::string& spec);

// Returns the path of "file:///PATH" or a plain path; throws UsageError for other schemes.
std::string FilePath(const std::string& spec);

}  // namespace qcowfs
