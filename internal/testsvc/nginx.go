package testsvc

import "fmt"

// NginxConf is the nginx.conf of a master with two workers serving dir on
// 127.0.0.1:port, keeping every file it writes in dir (Debian's nginx
// started by a test or a benchmark, not the system's).
func NginxConf(dir string, port int) string {
	return fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen 127.0.0.1:%[2]d;
    root %[1]s;
    location / { }
  }
}
`, dir, port)
}
