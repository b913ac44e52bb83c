//go:build tools

package imago

import (
	_ "github.com/go-chi/chi/v5"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/go-zookeeper/zk"
	_ "github.com/goccy/go-yaml"
	_ "github.com/jackc/pgx/v5"
	_ "github.com/pressly/goose/v3"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
)
