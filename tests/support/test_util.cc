#include "test_util.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>

namespace qcowfs_test {

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/qcowfs-test-XXXXXX";
  if (!mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed");
  path_ = templ;
}

TempDir::~TempDir() {
  // Never follow into a mount left behind: -xdev keeps rm on this file system.
  Sh("rm -rf --one-file-system " + Quote(path_));
}

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

CommandResult Sh(const std::string& command) {
  std::string full = "(" + command + ") 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = pclose(p);
  int status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return {status, out};
}

std::vector<std::string> JsonValues(const std::string& text, const std::string& key) {
  std::vector<std::string> out;
  const std::string needle = "\"" + key + "\": ";
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    size_t from = at + needle.size(), to = from;
    if (from < text.size() && text[from] == '"') {
      to = ++from;
      while (to < text.size() && text[to] != '"') to += text[to] == '\\' ? 2 : 1;
    } else {
      while (to < text.size() && text[to] != ',' && text[to] != '}' && text[to] != ']' &&
             text[to] != '\n') {
        ++to;
      }
    }
    out.push_back(text.substr(from, std::min(to, text.size()) - from));
  }
  return out;
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + path);
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
  close(fd);
  if (n < 0) throw std::runtime_error("cannot read " + path);
  return out;
}

void WriteAt(const std::string& path, uint64_t offset, const std::vector<uint8_t>& bytes) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot open " + path);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = pwrite(fd, bytes.data() + done, bytes.size() - done, offset + done);
    if (n <= 0) throw std::runtime_error("cannot write " + path);
    done += n;
  }
  close(fd);
}

std::vector<uint8_t> RandomBytes(uint64_t n, uint64_t seed) {
  std::vector<uint8_t> out(n);
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (uint64_t i = 0; i < n; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    out[i] = static_cast<uint8_t>(x);
  }
  return out;
}

uint8_t PatternByte(uint64_t offset) {
  uint64_t x = offset * 0x9e3779b97f4a7c15ull;
  return static_cast<uint8_t>((x >> 56) | 1);
}

void PatternSource::ReadAt(uint64_t offset, uint8_t* out, uint64_t n) const {
  // One map lookup per cluster touched, then the bytes of that cluster.
  const uint64_t cluster = uint64_t{1} << cluster_bits_;
  for (uint64_t i = 0; i < n;) {
    const uint64_t o = offset + i;
    const uint64_t span = std::min(n - i, cluster - (o & (cluster - 1)));
    const bool data = o < size_ && allocated_.Contains(o >> cluster_bits_);
    for (uint64_t k = 0; k < span; ++k) {
      out[i + k] = data && o + k < size_ ? PatternByte(o + k) : 0;
    }
    i += span;
  }
}

qcow::ClusterMap PatternSource::Allocation(uint32_t cluster_bits) const {
  qcow::ClusterMap::Builder b;
  for (const auto& r : allocated_.runs()) {
    b.AddBytes(r.first << cluster_bits_, r.count << cluster_bits_, cluster_bits);
  }
  return b.Build();
}

int FeedFromDescriptor(qcow::ImportJob& job, uint64_t handle, int fd, uint64_t* moved, size_t chunk,
                       bool until_complete) {
  std::vector<uint8_t> buf(chunk);
  for (uint64_t off = 0;;) {
    int64_t n = 0;
    if (const int rc = job.WriteFrom(handle, off, fd, 4 << 20, &n, "the test's input")) return rc;
    if (n == qcow::StreamDecoder::kNotMoved) {
      n = ::read(fd, buf.data(), job.ReadLength(handle, off, buf.size()));
      if (n < 0 && errno != EAGAIN) return errno;
      if (n > 0) {
        if (const int rc = job.Write(handle, off, std::span(buf.data(), static_cast<size_t>(n)))) {
          return rc;
        }
      }
    } else if (n > 0) {
      *moved += static_cast<uint64_t>(n);
    }
    if (n == 0) return 0;
    if (n < 0) {
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, 10'000);
      continue;
    }
    off += static_cast<uint64_t>(n);
    if (until_complete && job.Complete(handle)) return 0;
  }
}

int Lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

bool Has(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

}  // namespace qcowfs_test
