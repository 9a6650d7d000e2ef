package deps
import (
_ "github.com/hashicorp/memberlist"
_ "github.com/hashicorp/raft"
_ "github.com/hashicorp/raft-boltdb/v2"
_ "github.com/gorilla/mux"
_ "github.com/golang-jwt/jwt/v5"
_ "github.com/prometheus/client_golang/prometheus"
_ "golang.org/x/time/rate"
_ "go.etcd.io/bbolt"
)
