// qcowfs: moves virtual disks in and out of hosts in qcow2 format.
#include "cli/command_line.h"

int main(int argc, char** argv) { return qcowfs::RunCommandLine(argc, argv); }
