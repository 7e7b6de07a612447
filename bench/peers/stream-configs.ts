// Config text for the L4 peers of the tunnel-throughput scenario: nginx `stream` (one process, half-close on) and
// HAProxy `mode tcp` with splice-auto, each relaying one port to one backend. Text only; peers/targets.ts starts them.

/** nginx `stream` proxy, master_process off so the one process is the proxy whose CPU is read. */
export function nginxStreamConfig(dir: string, port: number, backendPort: number): string {
  // `daemon off;` comes from startNginx's -g (a second one here would be a duplicate directive).
  return `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
master_process off; worker_processes 1;
pid ${dir}/nginx.pid; error_log ${dir}/nginx-error.log warn;
events { worker_connections 1024; }
stream { server { listen 127.0.0.1:${port}; proxy_pass 127.0.0.1:${backendPort}; proxy_buffer_size 64k; proxy_half_close on; } }
`;
}

/** HAProxy, one thread, `mode tcp` with `option splice-auto` (it splices when it sees fit). */
export function haproxyTcpConfig(port: number, backendPort: number): string {
  return `global
    nbthread 1
    maxconn 1024
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    option splice-auto
frontend f
    bind 127.0.0.1:${port}
    default_backend b
backend b
    server s1 127.0.0.1:${backendPort}
`;
}
