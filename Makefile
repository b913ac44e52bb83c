# Imago: the two commands are `make run` and `make test` (see README.md).
GO        ?= go
BIN       := bin/imago
SERVICES  := .services.env
FUZZTIME  ?= 20000x
# Packages whose tests run under the race detector (the concurrent ones).
RACE_PKGS := ./broker/... ./gateway/... ./groups/... ./internal/... ./console/... ./offsetdb/... ./migrations/... ./textproto/... ./cmd/... ./client/... ./xa/... ./outbox/... ./cluster/... ./replica/...

.PHONY: run build test services check unit race fuzz java disruptive crash-long linear-long cluster-long bench clean screenshots

build:
	$(GO) build -o $(BIN) ./cmd/imago

## run: build and start the embedded default (./data, 127.0.0.1:8080, no database, no ZooKeeper)
run: build
	./$(BIN) serve

## services: make sure MariaDB, PostgreSQL and ZooKeeper run on loopback (installs when missing)
services:
	bash scripts/services.sh $(SERVICES)

## test: everything, on a fresh machine
test: services check
	bash scripts/java-deps.sh
	set -a && . ./$(SERVICES) && set +a && $(MAKE) --no-print-directory unit race fuzz java disruptive

check:
	@out=$$(gofmt -l $$(git ls-files '*.go' ; git ls-files --others --exclude-standard '*.go')); \
	 if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/clients/java$$')

race:
	$(GO) test -race -count=1 -timeout 20m -short $(RACE_PKGS)

# Fuzz budgets are execution counts (FUZZTIME=20000x, a few seconds per target here): with a
# duration, go1.26's fuzz coordinator can report its own stop as "context deadline exceeded"
# (golang/go#75804, fixed in go1.27). -fuzzminimizetime 1s keeps the minimization of each new
# interesting input short. A longer run: make fuzz FUZZTIME=500000x.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./broker
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeProduceRequest$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./gateway
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeTxBody$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./gateway
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeGroupRequests$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./gateway
	$(GO) test -run '^$$' -fuzz '^FuzzParsePollQuery$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./gateway
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEntry$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./broker/internal/dedupe
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeFileRecord$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./offsetdb
	$(GO) test -run '^$$' -fuzz '^FuzzParseLine$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./textproto
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./xa
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeHeaders$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./outbox
	$(GO) test -run '^$$' -fuzz '^FuzzCompileSQL$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./xa
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeGlobalRequest$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./gateway
	$(GO) test -run '^$$' -fuzz '^FuzzAppendJSONString$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./gateway
	$(GO) test -run '^$$' -fuzz '^FuzzParseXid$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./client
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeMessages$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./textproto
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeState$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./cluster
	$(GO) test -run '^$$' -fuzz '^FuzzParseJSONNumber$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./xa
	$(GO) test -run '^$$' -fuzz '^FuzzCompact$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./internal/jsontext
	$(GO) test -run '^$$' -fuzz '^FuzzEncodedSize$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1s ./outbox

## java: the Java XAResource conformance harness, the examples, and the JTA scenarios under
## Bitronix. The harness restarts PostgreSQL and MariaDB, so it runs alone, after everything
## else; -v so its table shows in CI logs.
java:
	$(GO) test -count=1 -v -timeout 5m ./clients/java/

## disruptive: tests that restart the shared database servers, so they run alone, serially
disruptive:
	IMAGO_DISRUPTIVE=1 $(GO) test -count=1 -p 1 -run 'Test(Postgres|MariaDB)RestartBetweenPrepareAndCommit|TestDatabaseRestartsDuringPhaseTwo' ./xa

## crash-long: the crash tests with their long round counts (SIGKILL: 50 rounds; SIGKILL plus power loss: 25)
## The long targets start the services and read their addresses, as test does: without them the
## tests that need a database or ZooKeeper would skip, and the target would pass having run nothing.
crash-long: services
	set -a && . ./$(SERVICES) && set +a && $(GO) test -count=1 -timeout 15m ./cmd/imago -run Crash -crash.long -v

## cluster-long: the three-process cluster fault tests with their long counts (50 leader kills)
cluster-long: services
	set -a && . ./$(SERVICES) && set +a && $(GO) test -count=1 -timeout 40m ./cmd/imago -run 'TestCluster' -cluster.long -v

## screenshots: the console's pages at 1280x800, taken by its browser test, into docs/console/
screenshots: services
	set -a && . ./$(SERVICES) && set +a && IMAGO_CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console \
		$(GO) test -count=1 -run '^TestConsoleBrowser$$' ./cmd/imago

## linear-long: the single node's produce/fetch histories under kill -9, power loss and proxy
## faults, checked for linearizability (4 rounds of 15 s instead of one short round)
linear-long: services
	set -a && . ./$(SERVICES) && set +a && $(GO) test -count=1 -timeout 15m ./cmd/imago -run TestLinearizableSingleNode -linear.long -v

bench: build
	bash scripts/bench.sh

clean:
	rm -rf bin
