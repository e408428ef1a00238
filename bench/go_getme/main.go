// Command go_getme is a reference for `GET /v1/users/me`: a Go net/http
// server with a pgx (v4) pool that runs the service's single-row query for
// one fixed user and returns the same JSON fields. No authentication, no
// middleware, no logging: the Go counterpart of bench/baseline_app.py.
//
//	BENCH_DATABASE_URL=postgresql://... BENCH_USER_ID=<uuid> \
//	    ./go_getme -port 8002 -max-conns 20
//
// bench/run.py builds it offline against the Debian pgx sources (GOPATH
// mode, see bench/README.md) into a temporary directory and runs it beside
// the service. It uses as many cores as the machine has (GOMAXPROCS left at
// its default), as the Python servers do with their two workers.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgtype"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

const query = "SELECT id, email, name, password_hash, is_admin, created_at, updated_at " +
	"FROM users WHERE id = $1"

// userResponse has the same wire shape as the service's UserResponse.
type userResponse struct {
	ID        string   `json:"id"`
	Email     string   `json:"email"`
	Name      string   `json:"name"`
	CreatedAt wireTime `json:"created_at"`
	UpdatedAt wireTime `json:"updated_at"`
}

// wireTime is written as pydantic writes a UTC datetime: six digits of
// microseconds (none when there are none) and Z.
type wireTime time.Time

func (t wireTime) MarshalJSON() ([]byte, error) {
	utc := time.Time(t).UTC()
	layout := `"2006-01-02T15:04:05.000000Z07:00"`
	if utc.Nanosecond() == 0 {
		layout = `"2006-01-02T15:04:05Z07:00"`
	}
	return utc.AppendFormat(make([]byte, 0, len(layout)), layout), nil
}

type server struct {
	pool   *pgxpool.Pool
	userID pgtype.UUID
}

func (s *server) me(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, `{"detail":"method not allowed"}`, http.StatusMethodNotAllowed)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	var (
		user                 userResponse
		passwordHash         string
		isAdmin              bool
		createdAt, updatedAt time.Time
	)
	err := s.pool.QueryRow(ctx, query, s.userID).Scan(
		&user.ID, &user.Email, &user.Name, &passwordHash, &isAdmin, &createdAt, &updatedAt,
	)
	if errors.Is(err, pgx.ErrNoRows) {
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "user not found"})
		return
	}
	if err != nil {
		log.Printf("query: %v", err)
		writeJSON(w, http.StatusInternalServerError, map[string]string{"detail": "internal error"})
		return
	}
	user.CreatedAt, user.UpdatedAt = wireTime(createdAt), wireTime(updatedAt)
	writeJSON(w, http.StatusOK, user)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	payload, err := json.Marshal(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(payload)))
	w.WriteHeader(status)
	_, _ = w.Write(payload)
}

func run() error {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 8002, "port to listen on")
	maxConns := flag.Int("max-conns", 20, "most connections in the pool")
	minConns := flag.Int("min-conns", 4, "connections the pool keeps open")
	flag.Parse()

	var userID pgtype.UUID
	if err := userID.Set(os.Getenv("BENCH_USER_ID")); err != nil {
		return fmt.Errorf("BENCH_USER_ID: %w", err)
	}
	config, err := pgxpool.ParseConfig(os.Getenv("BENCH_DATABASE_URL"))
	if err != nil {
		return fmt.Errorf("BENCH_DATABASE_URL: %w", err)
	}
	config.MaxConns = int32(*maxConns)
	config.MinConns = int32(*minConns)
	config.ConnConfig.RuntimeParams["application_name"] = "ledgerline-bench-go"
	config.ConnConfig.RuntimeParams["timezone"] = "UTC"

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	pool, err := pgxpool.ConnectConfig(ctx, config)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer pool.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("/v1/users/me", (&server{pool: pool, userID: userID}).me)
	srv := &http.Server{
		Addr:              fmt.Sprintf("%s:%d", *host, *port),
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ListenAndServe() }()
	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}
