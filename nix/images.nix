# OCI images for docker-compose.yml, built without a Dockerfile:
#
#   docker load < "$(nix build --print-out-paths .#image-service)"
#   docker load < "$(nix build --print-out-paths .#image-trainer)"
#
# Each image holds the service build's closure (`mlwatch` is the flake's
# mlwatch-service: train, serve and runbooks, none of demo, up, load or
# report) and CA certificates, nothing else: no shell, no package manager. Both run as nobody (65534) and share the model
# through the /models volume: the trainer writes /models/model.json, the
# service reads it (SIGHUP reloads it: `docker compose kill -s HUP app`).
{ dockerTools
, cacert
, mlwatch
}:

let
  modelPath = "/models/model.json";

  mkImage = { name, port, args }:
    dockerTools.buildLayeredImage {
      inherit name;
      # docker-compose.yml refers to `${name}:latest`.
      tag = "latest";
      # mlwatch in /bin too, so that compose can run other subcommands
      # (`mlwatch runbooks` in docker-compose.yml) by name.
      contents = [ cacert mlwatch ];
      # A named volume mounted on /models is seeded with this directory's
      # ownership, so the non-root user can write the model into it.
      fakeRootCommands = ''
        mkdir -p models tmp
        chown 65534:65534 models
        chmod 1777 tmp
      '';
      config = {
        Cmd = [ "${mlwatch}/bin/mlwatch" ] ++ args;
        User = "65534:65534";
        WorkingDir = "/models";
        Env = [
          "PATH=/bin"
          "SSL_CERT_FILE=${cacert}/etc/ssl/certs/ca-bundle.crt"
          "MLWATCH_MODEL_PATH=${modelPath}"
        ];
        ExposedPorts."${toString port}/tcp" = { };
        Volumes."/models" = { };
        Labels = {
          "org.opencontainers.image.title" = name;
          "org.opencontainers.image.version" = mlwatch.version;
          "org.opencontainers.image.licenses" = "MIT";
        };
      };
    };
in
{
  service = mkImage {
    name = "mlwatch-service";
    port = 9000;
    args = [ "serve" "--listen" "0.0.0.0:9000" "--model-path" modelPath ];
  };

  trainer = mkImage {
    name = "mlwatch-trainer";
    port = 8002;
    args = [ "train" "--output" modelPath "--listen" "0.0.0.0:8002" ];
  };
}
