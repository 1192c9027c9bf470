//! Pinned namespaces: a pod's network, IPC and UTS namespaces kept alive by bind mounts of their nsfs
//! files, so no process has to hold them.
