# A NixOS module for the VM tests: an Alertmanager webhook receiver on
# 127.0.0.1:5099 that appends every notification, one JSON object per line,
# to /var/lib/webhook-logger/alerts.jsonl.
{ pkgs, ... }:

let
  logger = pkgs.writeText "webhook-logger.py" ''
    import http.server


    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with open("/var/lib/webhook-logger/alerts.jsonl", "ab") as log:
                log.write(body.replace(b"\n", b" ") + b"\n")
            self.send_response(200)
            self.end_headers()


    http.server.HTTPServer(("127.0.0.1", 5099), Handler).serve_forever()
  '';
in
{
  systemd.services.webhook-logger = {
    description = "Alertmanager webhook receiver that logs to a file";
    wantedBy = [ "multi-user.target" ];
    serviceConfig = {
      DynamicUser = true;
      StateDirectory = "webhook-logger";
      ExecStart = "${pkgs.python3.interpreter} ${logger}";
    };
  };
}
