#include "fuse/export_fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>
#include <system_error>
#include <vector>

#include "fuse/log.h"
#include "qcow/errors.h"
#include "qcow/export_reader.h"

namespace qcowfs {
namespace {

constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;
constexpr fuse_ino_t kExportIno = 2;
// The image never changes while mounted, so the kernel may cache names and attributes.
constexpr double kCacheSeconds = 3600;
// Preferred I/O size reported in st_blksize: tools like cp and cat read this much at once.
constexpr blksize_t kPreferredIoSize = 1 << 20;
// Zero padding in one reply is shorter than a cluster (at most 2 MiB).
constexpr size_t kZeroBufferSize = 2u << 20;
alignas(4096) const uint8_t kZeros[kZeroBufferSize] = {};
// Pieces (memory or fd buffers) a spliced reply may have; RequestSizeForPipe budgets for it.
constexpr size_t kMaxSplicePieces = 4;
// struct fuse_out_header (linux/fuse.h) precedes every reply.
constexpr size_t kFuseOutHeaderSize = 16;

}  // namespace

size_t RequestSizeForPipe() {
  // libfuse splices a reply only if its pipe holds page * (iovecs + buffers + 1) plus the
  // reply; a pipe may grow to /proc/sys/fs/pipe-max-size (1 MiB by default), or beyond
  // with CAP_SYS_RESOURCE. A 1 MiB request would never fit a 1 MiB pipe, so size requests
  // to the pipe we can really have, whole pages, at most FUSE's 1 MiB.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t budget = page * (1 + kMaxSplicePieces + 1) + kFuseOutHeaderSize;
  const size_t kMaxRequest = 1u << 20;
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return kMaxRequest;
  int got = fcntl(p[0], F_SETPIPE_SZ, static_cast<int>(kMaxRequest + budget));
  if (got < 0) {
    std::FILE* f = std::fopen("/proc/sys/fs/pipe-max-size", "re");
    int max = 0;
    if (f && std::fscanf(f, "%d", &max) == 1) got = fcntl(p[0], F_SETPIPE_SZ, max);
    if (f) std::fclose(f);
  }
  close(p[0]);
  close(p[1]);
  if (got <= 0 || static_cast<size_t>(got) < budget + 2 * page) return kMaxRequest;
  return std::min(kMaxRequest, (static_cast<size_t>(got) - budget) / page * page);
}

namespace {

ExportFile& Fs(fuse_req_t req) { return *static_cast<ExportFile*>(fuse_req_userdata(req)); }

// Replies with the errno for the exception being handled, logging it once. Every callback
// ends here, so no exception reaches libfuse.
void ReplyError(fuse_req_t req, const char* op) {
  int err = EIO;
  try {
    throw;
  } catch (const std::system_error& e) {
    err = e.code().value() ? e.code().value() : EIO;
    Log(LOG_ERR, "%s: %s", op, e.what());
  } catch (const std::bad_alloc&) {
    err = ENOMEM;
    Log(LOG_ERR, "%s: out of memory", op);
  } catch (const std::exception& e) {
    Log(LOG_ERR, "%s: %s", op, e.what());
  }
  fuse_reply_err(req, err);
}

struct stat Attr(const ExportFile& fs, fuse_ino_t ino) {
  struct stat st {};
  st.st_ino = ino;
  st.st_uid = getuid();
  st.st_gid = getgid();
  const timespec t = fs.source->mtime();
  st.st_atim = st.st_mtim = st.st_ctim = t;
  if (ino == kRootIno) {
    st.st_mode = S_IFDIR | 0555;
    st.st_nlink = 2;
  } else {
    const uint64_t size = fs.layout->image_size();
    st.st_mode = S_IFREG | 0444;
    st.st_nlink = 1;
    st.st_size = static_cast<off_t>(size);
    st.st_blocks = static_cast<blkcnt_t>((size + 511) / 512);
    st.st_blksize = kPreferredIoSize;
  }
  return st;
}

void OpInit(void*, fuse_conn_info* conn) {
  // libfuse derives the largest request (max_pages) from max_write.
  conn->max_write = static_cast<unsigned>(RequestSizeForPipe());
  // Data clusters are spliced from the source straight into the reply when possible.
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  try {
    ExportFile& fs = Fs(req);
    if (parent != kRootIno || fs.name != name) return (void)fuse_reply_err(req, ENOENT);
    fuse_entry_param e{};
    e.ino = kExportIno;
    e.attr = Attr(fs, kExportIno);
    e.attr_timeout = e.entry_timeout = kCacheSeconds;
    fuse_reply_entry(req, &e);
  } catch (...) {
    ReplyError(req, "lookup");
  }
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  try {
    if (ino != kRootIno && ino != kExportIno) return (void)fuse_reply_err(req, ENOENT);
    struct stat st = Attr(Fs(req), ino);
    fuse_reply_attr(req, &st, kCacheSeconds);
  } catch (...) {
    ReplyError(req, "getattr");
  }
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  try {
    if (ino != kRootIno) return (void)fuse_reply_err(req, ENOTDIR);
    ExportFile& fs = Fs(req);
    struct Entry {
      const char* name;
      fuse_ino_t ino;
      mode_t mode;
    };
    const Entry entries[] = {{".", kRootIno, S_IFDIR},
                             {"..", kRootIno, S_IFDIR},
                             {fs.name.c_str(), kExportIno, S_IFREG}};
    std::vector<char> buf(size);
    size_t used = 0;
    for (off_t i = off; i < static_cast<off_t>(std::size(entries)); ++i) {
      struct stat st {};
      st.st_ino = entries[i].ino;
      st.st_mode = entries[i].mode;
      size_t n =
          fuse_add_direntry(req, buf.data() + used, size - used, entries[i].name, &st, i + 1);
      if (n > size - used) break;
      used += n;
    }
    fuse_reply_buf(req, buf.data(), used);
  } catch (...) {
    ReplyError(req, "readdir");
  }
}

void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  try {
    if (ino != kExportIno) return (void)fuse_reply_err(req, EISDIR);
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
      return (void)fuse_reply_err(req, EROFS);
    }
    fi->keep_cache = 1;  // the image is immutable while mounted
    fuse_reply_open(req, fi);
  } catch (...) {
    ReplyError(req, "open");
  }
}

// Per-thread buffers reused across reads, so that the hot path does not allocate.
struct ReadBuffers {
  std::vector<uint8_t> metadata;
  std::vector<uint8_t> data;  // the whole reply, when it is copied rather than spliced
  std::vector<qcow::ExportSegment> segments;
  std::vector<uint8_t> bufvec;
};

// Replies with a bufvec: memory for metadata and padding, the source fd for data, so that
// libfuse splices data from the source's page cache into the reply.
void ReplySpliced(fuse_req_t req, ReadBuffers& b, int fd) {
  b.bufvec.resize(sizeof(fuse_bufvec) + b.segments.size() * sizeof(fuse_buf));
  auto* bv = reinterpret_cast<fuse_bufvec*>(b.bufvec.data());
  std::memset(bv, 0, b.bufvec.size());
  bv->count = b.segments.size();
  for (size_t i = 0; i < b.segments.size(); ++i) {
    const auto& s = b.segments[i];
    fuse_buf& f = bv->buf[i];
    f.size = s.length;
    if (s.kind == qcow::ExportSegment::Kind::kSource) {
      f.flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
      f.fd = fd;
      f.pos = static_cast<off_t>(s.position);
    } else if (s.kind == qcow::ExportSegment::Kind::kBytes) {
      f.mem = b.metadata.data() + s.position;
    } else {
      f.mem = const_cast<uint8_t*>(kZeros);
    }
  }
  fuse_reply_data(req, bv, FUSE_BUF_SPLICE_MOVE);
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  try {
    if (ino != kExportIno) return (void)fuse_reply_err(req, EISDIR);
    ExportFile& fs = Fs(req);
    thread_local ReadBuffers b;
    const uint64_t n = fs.layout->Plan(static_cast<uint64_t>(off), size, b.metadata, b.segments);
    const int fd = fs.source->splice_fd();
    // Splice only replies whose pieces fit the pipe budget (see RequestSizeForPipe) and
    // whose padding fits the zero buffer; fragmented ones are assembled in a reused buffer.
    bool splice = fd >= 0 && b.segments.size() <= kMaxSplicePieces;
    for (const auto& s : b.segments) {
      if (s.kind == qcow::ExportSegment::Kind::kZero && s.length > kZeroBufferSize) splice = false;
    }
    if (splice) return ReplySpliced(req, b, fd);
    b.data.resize(n);
    qcow::ResolveSegments(b.segments, b.metadata, *fs.source, b.data.data());
    fuse_reply_buf(req, reinterpret_cast<const char*>(b.data.data()), n);
  } catch (...) {
    ReplyError(req, "read");
  }
}

void OpStatfs(fuse_req_t req, fuse_ino_t) {
  try {
    struct statvfs st {};
    st.f_bsize = st.f_frsize = 512;
    st.f_blocks = (Fs(req).layout->image_size() + 511) / 512;
    st.f_files = 2;
    st.f_namemax = 255;
    fuse_reply_statfs(req, &st);
  } catch (...) {
    ReplyError(req, "statfs");
  }
}

// Everything that would change the tree: the export is read-only.
void OpSetattr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void OpMknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { fuse_reply_err(req, EROFS); }
void OpMkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { fuse_reply_err(req, EROFS); }
void OpUnlink(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpRename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) {
  fuse_reply_err(req, EROFS);
}
void OpCreate(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}

}  // namespace

const fuse_lowlevel_ops& ExportOperations() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = OpInit;
    o.lookup = OpLookup;
    o.getattr = OpGetattr;
    o.readdir = OpReaddir;
    o.open = OpOpen;
    o.read = OpRead;
    o.statfs = OpStatfs;
    o.setattr = OpSetattr;
    o.mknod = OpMknod;
    o.mkdir = OpMkdir;
    o.unlink = OpUnlink;
    o.rmdir = OpUnlink;
    o.rename = OpRename;
    o.create = OpCreate;
    return o;
  }();
  return ops;
}

}  // namespace qcowfs
