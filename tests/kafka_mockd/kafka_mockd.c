/* kafka_mockd: librdkafka's mock Kafka cluster as a tiny daemon, so that separate autopgo
 * processes in the tests share one "Kafka". Test helper only; there is no Kafka broker in apt.
 *
 * usage: kafka_mockd [-b brokers] [-p partitions] [topic[:partitions]...]
 * Prints the bootstrap servers ("127.0.0.1:port,...") as the first line on stdout and runs
 * until SIGTERM or SIGINT. Topics named on the command line are created up front with the
 * given (or -p) partition count; others are auto-created by the mock on first use. */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t running = 1;

static void on_signal(int sig)
{
    (void)sig;
    running = 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: kafka_mockd [-b brokers] [-p partitions] [topic[:partitions]...]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int brokers = 1, partitions = 4, opt;
    while ((opt = getopt(argc, argv, "b:p:h")) != -1) {
        switch (opt) {
        case 'b':
            brokers = atoi(optarg);
            break;
        case 'p':
            partitions = atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (brokers < 1 || partitions < 1) usage();

    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* The handle only hosts the mock; keep its own logging quiet (it warns about having no
     * bootstrap.servers, which is expected here). */
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (rk == NULL) {
        fprintf(stderr, "kafka_mockd: %s\n", err);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (mc == NULL) {
        fprintf(stderr, "kafka_mockd: cannot create the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    for (int i = optind; i < argc; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s", argv[i]);
        int n = partitions;
        char *colon = strrchr(name, ':');
        if (colon) {
            *colon = '\0';
            n = atoi(colon + 1);
        }
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, name, n, brokers < 3 ? brokers : 3);
        if (e) {
            fprintf(stderr, "kafka_mockd: topic %s: %s\n", name, rd_kafka_err2str(e));
            return 1;
        }
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    while (running) pause();

    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
