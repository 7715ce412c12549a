// A test HTTP server that plays xapi's handlers: it reads a request head, writes "200 OK"
// and "Connection: close" itself (for a PUT before any of the body is read), runs a tool
// with the socket as a descriptor or as standard input, reads the tool's stdout three bytes
// at a time for progress until end of file, waits for its exit status and only then closes
// the connection. Used by xapi_http_test.cc.
#pragma once

#include <chrono>
#include <cstdint>
#include <future>
#include <optional>
#include <string>
#include <vector>

namespace qcowfs_test {

using Clock = std::chrono::steady_clock;

using Clock = std::chrono::steady_clock;

// A tool still running after this is killed and its case fails: a hang must not block the
// suite. curl's own limit is longer, so that the server's verdict comes first.
constexpr auto kToolLimit = std::chrono::seconds(30);
inline const std::string kCurl = "timeout 45 curl -sS ";

// What xapi writes before it runs the tool; no Content-Length, the close ends the response.
constexpr char kResponseHead[] = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";

struct Request {
  std::string method, path;
  std::optional<uint64_t> content_length;
};

// How xapi runs the tool for one request.
struct ToolSpec {
  // Arguments after the binary: "{fd}" becomes the socket's descriptor number, "{length}"
  // the request's Content-Length, "{pipeN}" the descriptor the tool reads pipes[N] from.
  std::vector<std::string> args;
  bool socket_on_stdin = false;  // else stdin is /dev/null and the socket is "{fd}"
  std::string log;               // the tool's stderr
  // The image goes to the socket on stdout (xapi's qcow2 export); no progress is read.
  bool socket_on_stdout = false;
  std::string program = "";  // the binary ("": qcowfs)
  // Commands (run with sh -c while the tool runs) whose stdout reaches the tool on a pipe,
  // as xapi runs qemu-img map and info for qcow2-to-stdout.
  std::vector<std::string> pipes = {};
};

// What happened on one connection.
struct ToolRun {
  std::string error;  // the server's own trouble (no connection, bad request), else empty
  Request request;
  std::string command;
  int wait_status = -1;
  bool timed_out = false;
  std::vector<std::string> progress;  // every 3-byte read of the tool's stdout
  std::string progress_tail;          // bytes left at end of file that made no 3-byte read
  std::string log;
  bool client_gone_at_exit = false;  // the client had shut down its side when the tool exited
  double seconds = 0;
};

// Sends all n bytes; returns false when the peer is gone.
bool SendAll(int fd, const void* data, size_t n);

// An HTTP server on 127.0.0.1 that plays xapi's handler for one connection at a time.
class XapiServer {
 public:
  XapiServer();
  ~XapiServer();
  XapiServer(const XapiServer&) = delete;
  XapiServer& operator=(const XapiServer&) = delete;

  bool ok() const { return port_ != 0; }
  uint16_t port() const { return port_; }
  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  // Accepts the next connection in the background and handles it with spec.
  std::future<ToolRun> HandleOne(ToolSpec spec) {
    return std::async(std::launch::async, [this, spec] { return Handle(spec); });
  }

 private:
  ToolRun Handle(const ToolSpec& spec) const;

  int listener_ = -1;
  uint16_t port_ = 0;
};

// A client curl cannot be: sends `head` and `body`, half-closes its side if asked, reads at
// most read_limit bytes of the response (or to its end) and closes.
std::string RawClient(uint16_t port, const std::string& head, const std::vector<uint8_t>& body,
                      bool half_close, size_t read_limit);

}  // namespace qcowfs_test
