#include "xapi_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "mount_fixture.h"
#include "test_util.h"

namespace qcowfs_test {

bool WaitFor(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = poll(&p, 1, static_cast<int>(left));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

bool SendAll(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads the request head one byte at a time: the body after it belongs to the tool.
std::optional<Request> ReadRequestHead(int s, Clock::time_point deadline, std::string* error) {
  std::string head;
  while (head.size() < 4 || head.compare(head.size() - 4, 4, "\r\n\r\n") != 0) {
    if (head.size() > 65536 || !WaitFor(s, POLLIN, deadline)) {
      *error = "no complete request head: '" + head + "'";
      return std::nullopt;
    }
    char c;
    const ssize_t n = recv(s, &c, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *error = "the connection ended inside the request head: '" + head + "'";
      return std::nullopt;
    }
    head += c;
  }
  Request r;
  std::istringstream in(head);
  std::string line;
  std::getline(in, line);
  std::istringstream(line) >> r.method >> r.path;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (name == "content-length") r.content_length = std::stoull(line.substr(colon + 1));
  }
  return r;
}

// Runs the tool on socket s as xapi does and fills run.
void RunTool(int s, const ToolSpec& spec, Clock::time_point deadline, ToolRun* run) {
  std::vector<std::string> args{spec.program.empty() ? QcowfsBinary() : spec.program};
  // xapi's side of the JSON pipes: each writer runs on its own, the tool gets the read end.
  std::vector<int> pipe_ends;
  std::vector<pid_t> writers;
  for (const std::string& command : spec.pipes) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
      run->error = "pipe2 failed";
      return;
    }
    const pid_t w = fork();
    if (w == 0) {
      if (dup2(p[1], STDOUT_FILENO) < 0) _exit(126);
      execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(p[1]);
    pipe_ends.push_back(p[0]);
    writers.push_back(w);
  }
  const auto reap_writers = [&] {
    for (int fd : pipe_ends) {
      if (fd >= 0) close(fd);
    }
    for (pid_t w : writers) waitpid(w, nullptr, 0);
  };
  for (const auto& a : spec.args) {
    if (a.rfind("{pipe", 0) == 0) {
      args.push_back(std::to_string(pipe_ends.at(std::stoul(a.substr(5)))));
    } else if (a == "{fd}") {
      args.push_back(std::to_string(s));
    } else if (a == "{length}") {
      if (!run->request.content_length) {
        run->error = "the request has no Content-Length";
        reap_writers();
        return;
      }
      args.push_back(std::to_string(*run->request.content_length));
    } else {
      args.push_back(a);
    }
  }
  std::vector<char*> argv;
  for (auto& a : args) {
    argv.push_back(a.data());
    run->command += (run->command.empty() ? "" : " ") + Quote(a);
  }
  argv.push_back(nullptr);
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    run->error = "pipe2 failed";
    reap_writers();
    return;
  }
  const int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int log = open(spec.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const auto start = Clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    // Only async-signal-safe calls here: the test has other threads. The tool starts with
    // default signal handling, so that a SIGPIPE death would show.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (dup2(spec.socket_on_stdin ? s : devnull, STDIN_FILENO) < 0 ||
        dup2(spec.socket_on_stdout ? s : out[1], STDOUT_FILENO) < 0 ||
        dup2(log, STDERR_FILENO) < 0) {
      _exit(126);
    }
    // Like xapi's fork helper, pass only the named descriptor: nothing the test's other
    // threads hold open (curl's pipes) leaks into the tool.
    if (close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) != 0) _exit(126);
    if (!spec.socket_on_stdin && !spec.socket_on_stdout && fcntl(s, F_SETFD, 0) != 0) {
      _exit(126);
    }
    for (int fd : pipe_ends) {
      if (fcntl(fd, F_SETFD, 0) != 0) _exit(126);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  if (pid < 0) {
    run->error = std::string("fork: ") + strerror(errno);
    for (int fd : {out[0], out[1], devnull, log}) close(fd);
    reap_writers();
    return;
  }
  close(out[1]);
  close(devnull);
  close(log);
  for (int& fd : pipe_ends) close(std::exchange(fd, -1));
  // xapi: really_read 3 bytes, again and again, until end of file.
  char digits[3];
  size_t got = 0;
  for (;;) {
    if (!WaitFor(out[0], POLLIN, deadline)) {
      run->timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    const ssize_t n = read(out[0], digits + got, 3 - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
    if (got == 3) {
      run->progress.emplace_back(digits, 3);
      got = 0;
    }
  }
  run->progress_tail.assign(digits, got);
  close(out[0]);
  // Then the exit status (under the same deadline, in case the tool closed stdout and hung).
  while (waitpid(pid, &run->wait_status, WNOHANG) == 0) {
    if (Clock::now() > deadline && !run->timed_out) {
      run->timed_out = true;
      kill(pid, SIGKILL);
    }
    usleep(2000);
  }
  run->seconds = std::chrono::duration<double>(Clock::now() - start).count();
  reap_writers();
  pollfd p{s, POLLRDHUP, 0};
  run->client_gone_at_exit =
      poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  try {
    const auto bytes = ReadFile(spec.log);
    run->log.assign(bytes.begin(), bytes.end());
  } catch (const std::exception& e) {
    run->log = e.what();
  }
}

XapiServer::XapiServer() {
  listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (listener_ < 0 || bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      listen(listener_, 4) != 0 ||
      getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return;
  }
  port_ = ntohs(a.sin_port);
}
XapiServer::~XapiServer() {
  if (listener_ >= 0) close(listener_);
}

ToolRun XapiServer::Handle(const ToolSpec& spec) const {
  ToolRun run;
  const auto deadline = Clock::now() + kToolLimit;
  if (!WaitFor(listener_, POLLIN, deadline)) {
    run.error = "no connection came";
    return run;
  }
  const int s = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
  if (s < 0) {
    run.error = std::string("accept: ") + strerror(errno);
    return run;
  }
  if (auto request = ReadRequestHead(s, deadline, &run.error)) {
    run.request = *request;
    // xapi answers before the tool runs: for a PUT, before a byte of the body is read.
    if (!SendAll(s, kResponseHead, sizeof kResponseHead - 1)) {
      run.error = "cannot write the response head";
    } else {
      RunTool(s, spec, deadline, &run);
    }
  }
  close(s);  // only now does the client see the end of the response
  return run;
}

// A client curl cannot be: sends `head` and `body`, half-closes its side if asked, reads at
// most read_limit bytes of the response (or to its end) and closes.
std::string RawClient(uint16_t port, const std::string& head, const std::vector<uint8_t>& body,
                      bool half_close, size_t read_limit) {
  const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval limit{45, 0};
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  std::string response;
  if (connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      SendAll(c, head.data(), head.size()) && SendAll(c, body.data(), body.size())) {
    if (half_close) shutdown(c, SHUT_WR);
    char buf[4096];
    while (response.size() < read_limit) {
      const ssize_t n = recv(c, buf, std::min(sizeof buf, read_limit - response.size()), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      response.append(buf, static_cast<size_t>(n));
    }
  }
  close(c);
  return response;
}

}  // namespace qcowfs_test
