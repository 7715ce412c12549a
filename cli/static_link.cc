// Only in the static build (QCOWFS_STATIC): libfuse3.a's high-level API can load filesystem
// modules with dlopen, which a static glibc supports only with the shared libraries of the
// glibc it was linked with. qcowfs uses the low-level API and no modules, so dlopen is
// linked to this stub (-Wl,--wrap=dlopen): glibc's dlopen is left out of the binary, and a
// module asked for by name (-o modules=...) fails to load with an error from libfuse.
#include <cerrno>

extern "C" void* __wrap_dlopen(const char* /*file*/, int /*mode*/) {
  errno = ENOSYS;
  return nullptr;
}
