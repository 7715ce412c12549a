// A test library preloaded into the qcowfs daemon (LD_PRELOAD): once the file named by
// $QCOWFS_TEST_THROW_ONCE exists, the next operator new throws an int, an exception that
// is not a std::exception, as a library could; every other allocation is the usual one.
// It lets a test check that such an exception inside a FUSE callback becomes an errno, not
// the daemon's end, with no hook in qcowfs itself.
#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <new>

namespace {

std::atomic<bool> thrown{false};

}  // namespace

void* operator new(std::size_t n) {
  static const char* const trigger = std::getenv("QCOWFS_TEST_THROW_ONCE");
  if (trigger && !thrown.load() && ::access(trigger, F_OK) == 0 && !thrown.exchange(true)) {
    throw 42;
  }
  // The next definition (libstdc++'s, or a sanitizer's), so that delete matches it.
  using New = void* (*)(std::size_t);
  static const New next = reinterpret_cast<New>(::dlsym(RTLD_NEXT, "_Znwm"));
  return next(n);
}
