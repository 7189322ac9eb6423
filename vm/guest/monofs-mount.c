/* monofs-mount: mount a MonoFS NFSv3 export with mount(2) directly, so guest tests do not
 * depend on mount.nfs or a portmapper.
 *
 * usage: monofs-mount [-p PORT] [-a ADDR] [-e EXPORT] [-o OPTS] [-r] DIR
 *   PORT   NFS and MOUNT port (default $MONOFS_PORT, else 2049)
 *   ADDR   server IPv4 address (default $MONOFS_ADDR, else 10.0.2.2)
 *   EXPORT exported path (default /)
 *   OPTS   extra comma separated NFS options appended to the defaults (later wins),
 *          e.g. "rsize=65536,actimeo=0"; "ro" in OPTS also sets MS_RDONLY
 *   -r     mount read-only (MS_RDONLY)
 * The kernel receives:
 *   vers=3,proto=tcp,port=P,mountport=P,mountproto=tcp,nolock,addr=A,mountaddr=A[,OPTS]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

static void usage(void) {
    fprintf(stderr, "usage: monofs-mount [-p PORT] [-a ADDR] [-e EXPORT] [-o OPTS] [-r] DIR\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *port = getenv("MONOFS_PORT");
    const char *addr = getenv("MONOFS_ADDR");
    const char *export = "/";
    const char *extra = NULL;
    unsigned long flags = 0;
    int c;
    if (!port || !*port) port = "2049";
    if (!addr || !*addr) addr = "10.0.2.2";
    while ((c = getopt(argc, argv, "p:a:e:o:rh")) != -1) {
        switch (c) {
        case 'p': port = optarg; break;
        case 'a': addr = optarg; break;
        case 'e': export = optarg; break;
        case 'o': extra = optarg; break;
        case 'r': flags |= MS_RDONLY; break;
        default: usage();
        }
    }
    if (optind != argc - 1) usage();
    const char *dir = argv[optind];

    char data[4096];
    int n = snprintf(data, sizeof data,
                     "vers=3,proto=tcp,port=%s,mountport=%s,mountproto=tcp,nolock,addr=%s,mountaddr=%s",
                     port, port, addr, addr);
    if (extra && *extra) n += snprintf(data + n, sizeof data - n, ",%s", extra);
    if (n >= (int)sizeof data) { fprintf(stderr, "monofs-mount: options too long\n"); return 2; }
    if (extra) {
        /* honour a bare "ro" option as a mount flag as well */
        char *copy = strdup(extra), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
            if (strcmp(t, "ro") == 0) flags |= MS_RDONLY;
        free(copy);
    }

    char source[1024];
    snprintf(source, sizeof source, "%s:%s", addr, export);
    if (mount(source, dir, "nfs", flags, data) != 0) {
        int e = errno;
        fprintf(stderr, "monofs-mount: mount %s on %s (%s) failed: %s (errno %d)\n",
                source, dir, data, strerror(e), e);
        return 1;
    }
    return 0;
}
