// The fuzzer's bytes as a file, for targets that read images through file descriptors.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

// Returns a memfd holding the n bytes at data (the caller closes it), or -1.
inline int MemfdInput(const char* name, const uint8_t* data, size_t n) {
  const int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return -1;
  if (n > 0 && ::write(fd, data, n) != static_cast<ssize_t>(n)) {
    ::close(fd);
    return -1;
  }
  return fd;
}
