# autopgo on Nomad: two servers, two workers and one scraper (--mode nomad) for the example app,
# which registers its pprof service with the seed's tags. `nomad job run deploy/nomad/autopgo.nomad.hcl`
# (Docker driver; the image from `make image` loaded on the clients; the store and NATS are yours).
job "autopgo" {
  type = "service"

  group "server" {
    count = 2

    network {
      port "http" { to = 8080 }
    }

    service {
      name     = "autopgo-server"
      provider = "nomad"
      port     = "http"

      check {
        name     = "ready"
        type     = "http"
        path     = "/api/ready"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "server" {
      driver = "docker"

      config {
        image = "autopgo:0.1.0"
        args  = ["server", "--port", "8080"]
        ports = ["http"]
      }

      env {
        AUTOPGO_BLOB_STORE_URL   = "s3://autopgo-profiles?region=eu-west-1"
        AUTOPGO_EVENT_WRITER_URL = "nats://autopgo.events?jetstream=true"
        NATS_SERVER_URL          = "nats://nats.service.consul:4222"
        AUTOPGO_LOG_FORMAT       = "json"
      }

      resources {
        cpu    = 200
        memory = 256
      }
    }
  }

  group "worker" {
    count = 2

    network {
      port "http" { to = 8080 }
    }

    service {
      name     = "autopgo-worker"
      provider = "nomad"
      port     = "http"

      check {
        name     = "health"
        type     = "http"
        path     = "/api/health"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "worker" {
      driver = "docker"

      # a merge in progress is finished on SIGTERM
      kill_timeout = "120s"

      config {
        image = "autopgo:0.1.0"
        args  = ["worker", "--port", "8080"]
        ports = ["http"]
      }

      env {
        AUTOPGO_BLOB_STORE_URL   = "s3://autopgo-profiles?region=eu-west-1"
        AUTOPGO_EVENT_WRITER_URL = "nats://autopgo.events?jetstream=true"
        AUTOPGO_EVENT_READER_URL = "nats://autopgo.events?jetstream=true&queue=workers"
        NATS_SERVER_URL          = "nats://nats.service.consul:4222"
        AUTOPGO_LOG_FORMAT       = "json"
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }

  # One scraper per application, as in the original: it reads Nomad's services API for services
  # tagged autopgo.scrape=true and autopgo.scrape.app=example-app.
  group "scraper" {
    count = 1

    network {
      port "http" { to = 8080 }
    }

    task "scraper" {
      driver = "docker"

      config {
        image = "autopgo:0.1.0"
        args  = ["scrape", "--mode", "nomad", "--port", "8080"]
        ports = ["http"]
      }

      # the API address of the local Nomad agent, and the servers found through Nomad's services
      template {
        data        = <<-EOT
          NOMAD_ADDR=http://{{ env "attr.unique.network.ip-address" }}:4646
          {{ with nomadService "autopgo-server" }}{{ with index . 0 }}AUTOPGO_API_URL=http://{{ .Address }}:{{ .Port }}{{ end }}{{ end }}
        EOT
        destination = "local/env"
        env         = true
      }

      env {
        AUTOPGO_APP         = "example-app"
        AUTOPGO_SAMPLE_SIZE = "3"
        AUTOPGO_FREQUENCY   = "60s"
        AUTOPGO_DURATION    = "30s"
        AUTOPGO_LOG_FORMAT  = "json"
      }

      resources {
        cpu    = 100
        memory = 128
      }
    }
  }

  # The application being profiled (the seed's example): its service carries the scrape tags.
  group "example-app" {
    count = 1

    network {
      port "http" { to = 8080 }
    }

    task "example-app" {
      driver = "docker"

      config {
        image = "my-image:latest"
        ports = ["http"]
      }

      service {
        name     = "example-app"
        provider = "nomad"
        port     = "http"
        tags = [
          "autopgo.scrape=true",
          "autopgo.scrape.app=example-app",
          "autopgo.scrape.path=/debug/pprof/profile",
          "autopgo.scrape.scheme=http",
        ]
      }
    }
  }
}
