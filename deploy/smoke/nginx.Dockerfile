# Stand-in for the official nginx image (deploy/smoke.sh): Debian's nginx-light with the official
# image's template step (/etc/nginx/templates/*.template -> /etc/nginx/conf.d/, ${VAR}s filled from
# the environment).
ARG ROOTFS
FROM ${ROOTFS}
RUN rm -f /etc/nginx/sites-enabled/default \
    && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
COPY nginx-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["nginx", "-g", "daemon off;"]
