// Descriptors a caller passes by number (fd:N, --destination-fd, --source-fd,
// --progress-fd, --allocation-from fd:N, qcow2-to-stdout's --json-header-* descriptors) must
// be ones the caller passed: open when the process started. A number nobody passed would
// otherwise name a file qcowfs opened itself (the target of an import, a disk, its stop
// descriptor), and a typo would write progress digits into a disk or read JSON from an
// eventfd forever.
#pragma once

#include <string>

namespace qcowfs {

// Records the descriptors open now; called first in main(), before anything is opened.
void RecordInheritedDescriptors();

// Returns fd; throws UsageError naming `what` (the option as given) unless fd was open when
// RecordInheritedDescriptors ran.
int RequireInherited(int fd, const std::string& what);

}  // namespace qcowfs
