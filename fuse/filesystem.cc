#include "fuse/filesystem.h"

#include <cxxabi.h>
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
#include "fuse/staging_pipe.h"
#include "qcow/export/export_reader.h"
#include "qcow/format/errors.h"

namespace qcowfs {
namespace {

constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;
constexpr fuse_ino_t kExportIno = 2;
constexpr fuse_ino_t kImportIno = 3;
constexpr fuse_ino_t kStatusIno = 4;
// The image never changes while mounted, so the kernel may cache names and attributes.
constexpr double kCacheSeconds = 3600;
// Preferred I/O size reported in st_blksize: tools like cp and cat read this much at once.
constexpr blksize_t kPreferredIoSize = 1 << 20;
// Zero padding in one reply is shorter than a cluster (at most 2 MiB).
constexpr size_t kZeroBufferSize = 2u << 20;
alignas(4096) const uint8_t kZeros[kZeroBufferSize] = {};
// FUSE's largest request: 256 pages.
constexpr size_t kMaxRequest = 1u << 20;
// Pieces (memory or fd buffers) a spliced reply may have; RequestSizeForPipe budgets for it.
constexpr size_t kMaxSplicePieces = 4;
// struct fuse_out_header (linux/fuse.h) precedes every reply.
constexpr size_t kFuseOutHeaderSize = 16;

}  // namespace

namespace {

// Returns the size of the largest pipe this process can have (0 if none can be sized): up
// to /proc/sys/fs/pipe-max-size (1 MiB by default), or beyond with CAP_SYS_RESOURCE.
size_t LargestPipe() {
  static const size_t size = [] {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t want = kMaxRequest + page * (1 + kMaxSplicePieces + 1) + kFuseOutHeaderSize;
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return size_t{0};
    int got = fcntl(p[0], F_SETPIPE_SZ, static_cast<int>(want));
    if (got < 0) {
      std::FILE* f = std::fopen("/proc/sys/fs/pipe-max-size", "re");
      int max = 0;
      if (f && std::fscanf(f, "%d", &max) == 1) got = fcntl(p[0], F_SETPIPE_SZ, max);
      if (f) std::fclose(f);
    }
    close(p[0]);
    close(p[1]);
    return got > 0 ? static_cast<size_t>(got) : size_t{0};
  }();
  return size;
}

}  // namespace

size_t RequestSizeForPipe() {
  // libfuse splices a reply only if its pipe holds page * (iovecs + buffers + 1) plus the
  // reply. A 1 MiB request would never fit a 1 MiB pipe, so size requests to the pipe we
  // can really have, whole pages, at most FUSE's 1 MiB.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t budget = page * (1 + kMaxSplicePieces + 1) + kFuseOutHeaderSize;
  const size_t got = LargestPipe();
  if (got < budget + 2 * page) return kMaxRequest;
  return std::min(kMaxRequest, (got - budget) / page * page);
}

namespace {

MountedFiles& Fs(fuse_req_t req) { return *static_cast<MountedFiles*>(fuse_req_userdata(req)); }

// Returns the inode named `name` in the root, or 0 when the mount does not hold it.
fuse_ino_t InodeOf(const MountedFiles& fs, const std::string& name) {
  if (fs.layout && name == fs.export_name) return kExportIno;
  if (fs.import && name == kImportName) return kImportIno;
  if (fs.import && name == kStatusName) return kStatusIno;
  return 0;
}

bool Exists(const MountedFiles& fs, fuse_ino_t ino) {
  return ino == kRootIno || (ino == kExportIno && fs.layout) ||
         ((ino == kImportIno || ino == kStatusIno) && fs.import);
}

// Replies with the errno for the exception being handled, whatever its type, logging it
// once. Every callback ends here, so no exception reaches libfuse.
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
  } catch (const abi::__forced_unwind&) {
    // A cancelled thread unwinds with this; glibc aborts if it does not go on.
    fuse_reply_err(req, EINTR);
    throw;
  } catch (...) {
    // Not a std::exception (thrown by some library): still an answer, not the daemon's end.
    Log(LOG_ERR, "%s: an exception that is not a std::exception", op);
  }
  fuse_reply_err(req, err);
}

// Owners and modes are what the kernel checks (the mount always uses default_permissions):
// with allow_other, other users get exactly the access the disks themselves give them.
struct stat Attr(const MountedFiles& fs, fuse_ino_t ino) {
  struct stat st {};
  st.st_ino = ino;
  st.st_uid = getuid();
  st.st_gid = getgid();
  const timespec t = fs.source ? fs.source->mtime() : fs.mount_time;
  st.st_atim = st.st_mtim = st.st_ctim = t;
  st.st_nlink = 1;
  switch (ino) {
    case kRootIno:
      st.st_mode = S_IFDIR | 0755;
      st.st_nlink = 2;
      break;
    case kExportIno: {
      const uint64_t size = fs.layout->image_size();
      // The source's owner and permissions, read-only: whoever may read the disk may read
      // its image, nobody else.
      st.st_uid = fs.source->uid();
      st.st_gid = fs.source->gid();
      st.st_mode = S_IFREG | (fs.source->mode() & 0555);
      st.st_size = static_cast<off_t>(size);
      st.st_blocks = static_cast<blkcnt_t>((size + 511) / 512);
      st.st_blksize = kPreferredIoSize;
      break;
    }
    case kImportIno:
      // Write-only, for the target's owner: an image goes in, nothing comes out.
      st.st_uid = fs.import_uid;
      st.st_gid = fs.import_gid;
      st.st_mode = S_IFREG | 0200;
      st.st_atim = st.st_mtim = st.st_ctim = fs.mount_time;
      st.st_size = static_cast<off_t>(fs.import->image_size());
      st.st_blksize = kPreferredIoSize;
      break;
    case kStatusIno:
      st.st_uid = fs.import_uid;
      st.st_gid = fs.import_gid;
      st.st_mode = S_IFREG | 0444;
      st.st_atim = st.st_mtim = st.st_ctim = fs.mount_time;
      st.st_size = static_cast<off_t>(fs.import->StatusText().size());
      break;
  }
  return st;
}

// The export never changes; the import files do, so the kernel must ask every time.
double CacheSeconds(fuse_ino_t ino) {
  return ino == kImportIno || ino == kStatusIno ? 0 : kCacheSeconds;
}

void OpInit(void* userdata, fuse_conn_info* conn) {
  // libfuse derives the largest request (max_pages) from max_write. Export reads must fit
  // the splice pipe; a mount with only the import can take FUSE's full 1 MiB writes.
  const auto& fs = *static_cast<const MountedFiles*>(userdata);
  conn->max_write = static_cast<unsigned>(fs.layout ? RequestSizeForPipe() : kMaxRequest);
  // Data clusters are spliced from the source straight into the reply when possible.
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  // Import writes must reach the decoder as written, not merged or reordered.
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  try {
    MountedFiles& fs = Fs(req);
    const fuse_ino_t ino = parent == kRootIno ? InodeOf(fs, name) : 0;
    if (!ino) return (void)fuse_reply_err(req, ENOENT);
    fuse_entry_param e{};
    e.ino = ino;
    e.attr = Attr(fs, ino);
    e.attr_timeout = CacheSeconds(ino);
    e.entry_timeout = kCacheSeconds;
    fuse_reply_entry(req, &e);
  } catch (...) {
    ReplyError(req, "lookup");
  }
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  try {
    MountedFiles& fs = Fs(req);
    if (!Exists(fs, ino)) return (void)fuse_reply_err(req, ENOENT);
    struct stat st = Attr(fs, ino);
    fuse_reply_attr(req, &st, CacheSeconds(ino));
  } catch (...) {
    ReplyError(req, "getattr");
  }
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  try {
    if (ino != kRootIno) return (void)fuse_reply_err(req, ENOTDIR);
    MountedFiles& fs = Fs(req);
    struct Entry {
      std::string name;
      fuse_ino_t ino;
      mode_t mode;
    };
    std::vector<Entry> entries = {{".", kRootIno, S_IFDIR}, {"..", kRootIno, S_IFDIR}};
    if (fs.layout) entries.push_back({fs.export_name, kExportIno, S_IFREG});
    if (fs.import) {
      entries.push_back({kImportName, kImportIno, S_IFREG});
      entries.push_back({kStatusName, kStatusIno, S_IFREG});
    }
    std::vector<char> buf(size);
    size_t used = 0;
    for (off_t i = off; i < static_cast<off_t>(entries.size()); ++i) {
      struct stat st {};
      st.st_ino = entries[i].ino;
      st.st_mode = entries[i].mode;
      size_t n = fuse_add_direntry(req, buf.data() + used, size - used, entries[i].name.c_str(),
                                   &st, i + 1);
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
    MountedFiles& fs = Fs(req);
    if (!Exists(fs, ino)) return (void)fuse_reply_err(req, ENOENT);
    const int mode = fi->flags & O_ACCMODE;
    switch (ino) {
      case kExportIno:
        if (mode != O_RDONLY || (fi->flags & O_TRUNC)) return (void)fuse_reply_err(req, EROFS);
        fi->keep_cache = 1;  // the image is immutable while mounted
        break;
      case kImportIno: {
        // Write-only: reading back an image being decoded is meaningless.
        if (mode != O_WRONLY) return (void)fuse_reply_err(req, EACCES);
        // Each writer's import is tied to its file handle: an old handle's late writes,
        // flushes and release never touch a newer import.
        uint64_t handle = 0;
        if (int rc = fs.import->Begin(&handle)) return (void)fuse_reply_err(req, rc);
        fi->fh = handle;
        Log(LOG_INFO, "import into %s started", fs.import_target.c_str());
        fi->direct_io = 1;  // no page cache: every write goes straight to the decoder
        break;
      }
      case kStatusIno:
        if (mode != O_RDONLY) return (void)fuse_reply_err(req, EACCES);
        fi->direct_io = 1;  // fresh on every read
        break;
      default:
        return (void)fuse_reply_err(req, EISDIR);
    }
    fuse_reply_open(req, fi);
  } catch (...) {
    ReplyError(req, "open");
  }
}

// Per-thread buffers reused across reads, so that the hot path does not allocate.
struct ReadBuffers {
  std::vector<uint8_t> metadata;
  std::vector<uint8_t> data;  // the whole reply when it is copied; else the unspliced pieces
  std::vector<qcow::ExportSegment> segments;
  std::vector<qcow::SourcePiece> pieces;  // of the kSource segments, in order
  std::vector<uint8_t> bufvec;
};

// Returns the buffers a spliced reply needs (runs of spliced pieces share one, as they come
// out of one pipe), or SIZE_MAX when the reply cannot be spliced: nothing to splice, or
// zero padding longer than the zero buffer.
size_t SplicedBuffers(const ReadBuffers& b) {
  size_t count = 0, piece = 0;
  bool piped = false, any_fd = false;
  auto add = [&](bool from_pipe) {
    if (!(from_pipe && piped)) ++count;
    piped = from_pipe;
  };
  for (const auto& s : b.segments) {
    if (s.kind != qcow::ExportSegment::Kind::kSource) {
      if (s.kind == qcow::ExportSegment::Kind::kZero && s.length > kZeroBufferSize) return SIZE_MAX;
      add(false);
      continue;
    }
    for (uint64_t left = s.length; left > 0; left -= b.pieces[piece++].length) {
      any_fd |= b.pieces[piece].fd >= 0;
      add(b.pieces[piece].fd >= 0);
    }
  }
  return any_fd ? count : SIZE_MAX;
}

// Replies with a bufvec: memory for metadata, padding and pieces that cannot be spliced,
// and for the rest a staging pipe that the files' pages were spliced into (no copy). Every
// source byte is in place before the reply starts, so a failed or short source read
// becomes EIO (thrown), never a short reply. Returns false when the data cannot be spliced
// (the caller copies).
bool ReplySpliced(fuse_req_t req, ReadBuffers& b, const qcow::Source& source, size_t buffers) {
  thread_local StagingPipe pipe;
  if (!pipe.Ready(LargestPipe())) return false;
  uint64_t memory = 0;
  for (const auto& p : b.pieces) memory += p.fd < 0 ? p.length : 0;
  b.data.resize(memory);
  b.bufvec.resize(sizeof(fuse_bufvec) + buffers * sizeof(fuse_buf));
  auto* bv = reinterpret_cast<fuse_bufvec*>(b.bufvec.data());
  std::memset(bv, 0, b.bufvec.size());
  fuse_buf* last = nullptr;
  auto add_memory = [&](const uint8_t* p, size_t n) {
    last = &bv->buf[bv->count++];
    last->mem = const_cast<uint8_t*>(p);
    last->size = n;
  };
  try {
    size_t piece = 0;
    uint8_t* copied = b.data.data();
    for (const auto& s : b.segments) {
      if (s.kind == qcow::ExportSegment::Kind::kBytes) {
        add_memory(b.metadata.data() + s.position, s.length);
        continue;
      }
      if (s.kind == qcow::ExportSegment::Kind::kZero) {
        add_memory(kZeros, s.length);
        continue;
      }
      for (uint64_t left = s.length; left > 0; left -= b.pieces[piece++].length) {
        const qcow::SourcePiece& p = b.pieces[piece];
        if (p.fd < 0) {
          source.ReadAt(p.offset, copied, p.length);
          add_memory(copied, p.length);
          copied += p.length;
          continue;
        }
        if (!pipe.Fill(p.fd, p.position, p.length, p.file ? *p.file : source.name())) {
          pipe.Reset();
          return false;
        }
        if (last && (last->flags & FUSE_BUF_IS_FD)) {
          last->size += p.length;  // the pipe gives them out in order
        } else {
          last = &bv->buf[bv->count++];
          last->flags = FUSE_BUF_IS_FD;
          last->fd = pipe.read_fd();
          last->size = p.length;
        }
      }
    }
  } catch (...) {
    pipe.Reset();
    throw;
  }
  fuse_reply_data(req, bv, FUSE_BUF_SPLICE_MOVE);
  // A reply that failed half way (interrupted request) may leave bytes behind; they must
  // not lead the next reply.
  if (!pipe.Empty()) pipe.Reset();
  return true;
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  try {
    MountedFiles& fs = Fs(req);
    if (ino == kStatusIno) {
      const std::string text = fs.import->StatusText();
      const size_t from = std::min(text.size(), static_cast<size_t>(off));
      const size_t n = std::min(size, text.size() - from);
      return (void)fuse_reply_buf(req, text.data() + from, n);
    }
    if (ino != kExportIno) return (void)fuse_reply_err(req, EBADF);
    thread_local ReadBuffers b;
    const uint64_t n = fs.layout->Plan(static_cast<uint64_t>(off), size, b.metadata, b.segments);
    if (n == 0) return (void)fuse_reply_buf(req, nullptr, 0);  // at or past the end
    b.pieces.clear();
    for (const auto& s : b.segments) {
      if (s.kind == qcow::ExportSegment::Kind::kSource) {
        fs.source->Pieces(s.position, s.length, b.pieces);
      }
    }
    // Splice only replies whose buffers fit the pipe budget (see RequestSizeForPipe) and
    // whose padding fits the zero buffer; fragmented ones are assembled in a reused buffer.
    const size_t buffers = SplicedBuffers(b);
    if (buffers <= kMaxSplicePieces && ReplySpliced(req, b, *fs.source, buffers)) return;
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
    const MountedFiles& fs = Fs(req);
    st.f_blocks = fs.layout ? (fs.layout->image_size() + 511) / 512 : 0;
    st.f_files = 4;
    st.f_namemax = 255;
    fuse_reply_statfs(req, &st);
  } catch (...) {
    ReplyError(req, "statfs");
  }
}

void OpWrite(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
             fuse_file_info* fi) {
  try {
    MountedFiles& fs = Fs(req);
    if (ino != kImportIno || !fs.import) return (void)fuse_reply_err(req, EBADF);
    const int rc = fs.import->Write(fi->fh, static_cast<uint64_t>(off),
                                    std::span(reinterpret_cast<const uint8_t*>(buf), size));
    if (rc) return (void)fuse_reply_err(req, rc);
    fuse_reply_write(req, size);
  } catch (...) {
    ReplyError(req, "write");
  }
}

// Ends the writer's import and returns its result: close() (flush) and fsync() carry it to
// the writer; later calls return the same result. A flush before any byte arrived returns
// EIO without ending anything: a shell redirection closing its spare descriptor (open,
// dup2, close) ignores it, and the close of an empty image fails, as it should.
int FinishImport(MountedFiles& fs, uint64_t handle) {
  const bool was_done = fs.import->state() == qcow::ImportJob::State::kDone;
  const int rc = fs.import->Flush(handle);
  if (rc == 0 && !was_done) Log(LOG_INFO, "import into %s done", fs.import_target.c_str());
  return rc;
}

void OpFlush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  try {
    MountedFiles& fs = Fs(req);
    fuse_reply_err(req, ino == kImportIno && fs.import ? FinishImport(fs, fi->fh) : 0);
  } catch (...) {
    ReplyError(req, "flush");
  }
}

void OpFsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info* fi) {
  try {
    MountedFiles& fs = Fs(req);
    fuse_reply_err(req, ino == kImportIno && fs.import ? FinishImport(fs, fi->fh) : 0);
  } catch (...) {
    ReplyError(req, "fsync");
  }
}

void OpRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  try {
    MountedFiles& fs = Fs(req);
    if (ino == kImportIno && fs.import) fs.import->Release(fi->fh);
    fuse_reply_err(req, 0);
  } catch (...) {
    ReplyError(req, "release");
  }
}

void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  try {
    MountedFiles& fs = Fs(req);
    if (ino != kImportIno || !fs.import) return (void)fuse_reply_err(req, EROFS);
    // Writers that skip holes (cp) set the size at the end; O_TRUNC sets it at open. Only
    // a writer's own descriptor may (ftruncate); modes and times are ignored.
    if (to_set & FUSE_SET_ATTR_SIZE) {
      if (!fi) return (void)fuse_reply_err(req, EBUSY);
      if (int rc = fs.import->Truncate(fi->fh, static_cast<uint64_t>(attr->st_size))) {
        return (void)fuse_reply_err(req, rc);
      }
    }
    struct stat st = Attr(fs, ino);
    fuse_reply_attr(req, &st, 0);
  } catch (...) {
    ReplyError(req, "setattr");
  }
}

// Preallocation of the import file (posix_fallocate, downloaders that reserve space): it
// only sets the image's size. Without it glibc emulates fallocate by writing a zero byte
// into every block, which would collide with the image's real bytes.
void OpFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                 fuse_file_info* fi) {
  try {
    MountedFiles& fs = Fs(req);
    if (ino != kImportIno || !fs.import) return (void)fuse_reply_err(req, EROFS);
    if (mode & ~FALLOC_FL_KEEP_SIZE) return (void)fuse_reply_err(req, EOPNOTSUPP);
    if (offset < 0 || length <= 0) return (void)fuse_reply_err(req, EINVAL);
    if (mode & FALLOC_FL_KEEP_SIZE) return (void)fuse_reply_err(req, 0);
    fuse_reply_err(req, fs.import->Extend(
                            fi->fh, static_cast<uint64_t>(offset) + static_cast<uint64_t>(length)));
  } catch (...) {
    ReplyError(req, "fallocate");
  }
}

// Everything that would change the tree: the mount's files are fixed.
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

const fuse_lowlevel_ops& Operations() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = OpInit;
    o.lookup = OpLookup;
    o.getattr = OpGetattr;
    o.readdir = OpReaddir;
    o.open = OpOpen;
    o.read = OpRead;
    o.statfs = OpStatfs;
    o.write = OpWrite;
    o.flush = OpFlush;
    o.fsync = OpFsync;
    o.release = OpRelease;
    o.setattr = OpSetattr;
    o.fallocate = OpFallocate;
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
