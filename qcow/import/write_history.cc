#include "qcow/import/write_history.h"

namespace qcow {

void WriteHistory::Write(uint64_t offset, uint64_t n) {
  if (n == 0) return;
  if (offset < last_end_) monotone_ = false;
  // A size set beyond everything written, then more writes: the size came first.
  if (size_ > max_end_) wrote_after_extension_ = true;
  last_end_ = offset + n;
  if (last_end_ > max_end_) max_end_ = last_end_;
}

bool WriteHistory::SetSize(uint64_t size) {
  if (size < max_end_) return false;
  size_ = size;
  return true;
}

}  // namespace qcow
