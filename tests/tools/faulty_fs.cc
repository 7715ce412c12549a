// faulty_fs: a test tool that shows one file, MOUNTPOINT/disk, whose bytes are those of a
// real BACKING file except that reads (and writes) touching [EIO_FROM, EIO_TO) fail with
// EIO. The file's size follows BACKING (truncate BACKING to shrink it); it is writable when
// BACKING is. The kernel here has no device mapper, so this is how the tests give qcowfs a
// source with an unreadable range, or a target with an unwritable one.
//
//   faulty_fs BACKING MOUNTPOINT EIO_FROM EIO_TO     (serves in the foreground)
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

std::string backing;
off_t eio_from = 0, eio_to = 0;
int backing_fd = -1;
bool writable = false;

int GetAttr(const char* path, struct stat* st, fuse_file_info*) {
  memset(st, 0, sizeof *st);
  if (strcmp(path, "/") == 0) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return 0;
  }
  if (strcmp(path, "/disk") != 0) return -ENOENT;
  struct stat b;
  if (fstat(backing_fd, &b) != 0) return -errno;
  st->st_mode = S_IFREG | (writable ? 0644 : 0444);
  st->st_nlink = 1;
  st->st_size = b.st_size;
  st->st_mtim = b.st_mtim;
  return 0;
}

int ReadDir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*,
            fuse_readdir_flags) {
  if (strcmp(path, "/") != 0) return -ENOENT;
  fill(buf, ".", nullptr, 0, FUSE_FILL_DIR_PLUS);
  fill(buf, "..", nullptr, 0, FUSE_FILL_DIR_PLUS);
  fill(buf, "disk", nullptr, 0, FUSE_FILL_DIR_PLUS);
  return 0;
}

int Open(const char* path, fuse_file_info* fi) {
  if (strcmp(path, "/disk") != 0) return -ENOENT;
  if ((fi->flags & O_ACCMODE) != O_RDONLY && !writable) return -EROFS;
  return 0;
}

bool Faulty(off_t off, size_t size) {
  return off < eio_to && off + static_cast<off_t>(size) > eio_from;
}

int Read(const char*, char* buf, size_t size, off_t off, fuse_file_info*) {
  if (Faulty(off, size)) return -EIO;
  ssize_t n = pread(backing_fd, buf, size, off);
  return n < 0 ? -errno : static_cast<int>(n);
}

int Write(const char*, const char* buf, size_t size, off_t off, fuse_file_info*) {
  if (Faulty(off, size)) return -EIO;
  ssize_t n = pwrite(backing_fd, buf, size, off);
  return n < 0 ? -errno : static_cast<int>(n);
}

int Fsync(const char*, int, fuse_file_info*) { return fsync(backing_fd) == 0 ? 0 : -errno; }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: faulty_fs BACKING MOUNTPOINT EIO_FROM EIO_TO\n");
    return 2;
  }
  backing = argv[1];
  eio_from = std::strtoll(argv[3], nullptr, 0);
  eio_to = std::strtoll(argv[4], nullptr, 0);
  backing_fd = open(backing.c_str(), O_RDWR | O_CLOEXEC);
  writable = backing_fd >= 0;
  if (!writable) backing_fd = open(backing.c_str(), O_RDONLY | O_CLOEXEC);
  if (backing_fd < 0) {
    std::perror(backing.c_str());
    return 1;
  }
  fuse_operations ops{};
  ops.getattr = GetAttr;
  ops.readdir = ReadDir;
  ops.open = Open;
  ops.read = Read;
  ops.write = Write;
  ops.fsync = Fsync;
  char* fuse_argv[] = {argv[0],
                       const_cast<char*>("-f"),
                       const_cast<char*>("-s"),
                       const_cast<char*>("-o"),
                       const_cast<char*>("attr_timeout=0"),
                       argv[2],
                       nullptr};
  return fuse_main(6, fuse_argv, &ops, nullptr);
}
