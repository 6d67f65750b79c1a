/*
 * process.h - standard process metrics and agenthub build info.
 *
 * Registers, in the metrics registry (obs/metrics.h), values computed at each
 * scrape from /proc/self and getrlimit:
 *   process_resident_memory_bytes, process_virtual_memory_bytes,
 *   process_cpu_seconds_total, process_open_fds, process_max_fds,
 *   process_start_time_seconds (standard Prometheus client names), and
 *   agenthub_build_info{version,compiler} 1, agenthub_uptime_seconds.
 * A scrape reads a few small /proc files; nothing else blocks.
 */
#ifndef AH_PROCESS_H
#define AH_PROCESS_H

/**
 * Registers the metrics above (initialising the registry if needed). Call once
 * after ah_metrics_init(); they are freed by ah_metrics_shutdown(). A value
 * that cannot be read at scrape time is rendered as NaN.
 * Returns 0, or the first error of the registry (-EEXIST when already
 * registered in this registry, -ENOMEM).
 */
int ah_process_metrics_register(void);

/**
 * Raises the soft RLIMIT_NOFILE to the hard limit (every client connection
 * and every upstream connection is a descriptor, so the common default soft
 * limit of 1,024 caps a gateway far below its server.max_connections). Logs
 * the change at info level. Returns the soft limit now in force (0 when it
 * cannot be read); failing to raise it is not an error.
 */
long ah_process_raise_nofile(void);

#endif
