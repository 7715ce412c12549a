// An owning file descriptor, closed exactly once when its owner goes: a constructor that
// throws after open() leaks nothing.
#pragma once

#include <unistd.h>

#include <utility>

namespace qcow {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(std::exchange(other.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  // Returns the descriptor (-1 when none).
  int get() const { return fd_; }
  // Returns the descriptor and stops owning it.
  int Release() { return std::exchange(fd_, -1); }
  // Closes the descriptor owned so far and owns fd instead.
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace qcow
